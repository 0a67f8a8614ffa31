"""Universal automatic segmentation benchmark: one model for every 2D task, no prompt.

On the 2D sets of ../shared/data (``configs/tasks_2d.yaml``), all on LiteMedSAM's frozen image
encoder with cached embeddings (computed once: on a fresh machine the 2-core CPU first encodes the
~1100 images of the six sets at ~1.5-2 s each, an estimate from the encoder's measured latency):

1. **universal**: one automatic head (``configs/universal_2d.yaml``: task + modality prior tokens,
   self-prompt, its own mask decoder) trained on kvasir_seg, ph2_derm, dsb2018_nuclei, busi and
   drishti_gs1_odoc together for ``BUDGET_PER_TASK_S`` x 5 seconds;
2. **adding a task**: isbi2012_em added to that checkpoint for ``BUDGET_PER_TASK_S`` seconds with new
   tokens and its own rank-8 low-rank update of the head's decoder (``universal.task_rank``), the shared
   head and old tokens frozen (``EXTEND["lowrank"]``); forgetting = the old tasks' test Dice before minus
   after. For comparison, new tokens alone (``EXTEND["tokens"]``) and the shared head trainable with
   the old tasks' data replayed (``EXTEND["replay"]``);
3. **per-dataset automatic**: the same architecture trained on one task at a time, ``BUDGET_PER_TASK_S``
   each (the same total budget as 1 + 2);
4. **MONAI U-Net** per dataset (``configs/unet_kvasir.yaml`` settings), ``BUDGET_PER_TASK_S`` each; for
   drishti one U-Net per class (disc, cup) at half the budget each, combined into one label map;
5. **prompted reference**: published LiteMedSAM given one ground-truth box per object (``medseg
   evaluate``'s protocol); it is told where every object is, so it is a reference, not a competitor;
6. **automatic first box**: the box around the largest component of each class of the universal
   model's label map, handed to the promptable path (LiteMedSAM's decoder): no ground truth used.

Scores: test split, mean per-case, per-class Dice at each image's own resolution (Dice 1 where a class
is absent from both; busi's normal images stay in for the automatic methods and have no box for the
reference). Best checkpoints are chosen on val, never on test. Budgets are wall-clock seconds on the
2-core CPU with 2 threads; on a GPU (``--device cuda``) the same script runs with the same budgets.

    python benchmarks/universal.py               # 37 min measured here, embeddings already cached
    python benchmarks/universal.py --quick       # two tasks + isbi, tiny budgets: a protocol smoke test

JSON shape: ``{"datasets": {NAME: {"universal_dice", "per_dataset_dice", "unet_dice",
"prompted_reference_dice"}}, "forgetting": {"per_task": {NAME: before - after}, "mean", "max"}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, EMBEDDING_CACHE, REPO, THREADS, require_data, set_threads, timed_train, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from medseg.data.tasks import TaskSource, load_tasks  # noqa: E402
from medseg.data.datasets import dataset_cases  # noqa: E402
from medseg.eval.evaluate import evaluate_case  # noqa: E402
from medseg.data.cases import load_image, plane  # noqa: E402
from medseg.eval.report import Report  # noqa: E402
from medseg.infer.automatic import AutoSegmenter  # noqa: E402
from medseg.models import build_model  # noqa: E402
from medseg.eval.automatic import score_label_maps  # noqa: E402
from medseg.models.unet import predict_label_map  # noqa: E402
from medseg.train import load_config  # noqa: E402
from medseg.train.embeddings import CachedPredictor, EmbeddingStore, build_embeddings  # noqa: E402

UNIVERSAL_CONFIG = REPO / "configs" / "universal_2d.yaml"
UNET_CONFIG = REPO / "configs" / "unet_kvasir.yaml"
BASE_TASKS = ["kvasir_seg", "ph2_derm", "dsb2018_nuclei", "busi", "drishti_gs1_odoc"]
NEW_TASK = "isbi2012_em"
# Adding a task. "lowrank" (the default way): the new task's tokens and its own rank-8 update of the
# head's decoder train (the tokens-only settings otherwise), so the old tasks cannot change.
# "tokens": only the new task's tokens train; prompt tuning needs a larger step than the head (lr 1e-2).
# "replay": the shared head trains too, on the new task (half the draws) and the old tasks' data.
TOKENS_ONLY = ["universal.train_shared=false", "optim.lr=1e-2", "optim.warmup_steps=10", "universal.epoch_size=160"]
EXTEND = {"lowrank": [*TOKENS_ONLY, "universal.task_rank=8"],
          "tokens": TOKENS_ONLY,
          "replay": ["universal.epoch_size=160"]}
BUDGET_PER_TASK_S = 100
STEPS_PER_EPOCH = 20          # short epochs: the time budget is met to within one epoch
COMMON = ["model.weights=published", "train.steps_per_epoch=20", "train.log_every=5", "data.val_limit=8", "train.seed=0",
          f"train.cache_dir={EMBEDDING_CACHE}"]
QUICK = {"tasks": ["kvasir_seg", "drishti_gs1_odoc"], "budget": 12,
         "settings": ["data.limit=8", "data.val_limit=3", "train.steps_per_epoch=3", "train.batch_size=4"],
         "test_limit": 4}


def task_file(data: Path, work: Path, names: list[str]) -> Path:
    """The ``names`` entries of configs/tasks_2d.yaml with their roots pointed at ``data``."""
    import yaml

    entries = {n: e for n, e in yaml.safe_load((REPO / "configs" / "tasks_2d.yaml").read_text()).items() if n in names}
    for name, entry in entries.items():
        entry["root"] = str(data / Path(entry["root"]).name)
    path = work / "tasks.yaml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def test_store(model, task: TaskSource, limit: int | None) -> tuple[list, EmbeddingStore]:
    cases = dataset_cases(task.root, "test", limit)
    store = build_embeddings(model, cases, EMBEDDING_CACHE, label=f"{task.root.name}-test-all",
                             modality=task.normalisation, progress=True)
    return cases, store


def auto_dice(checkpoint: Path, task: TaskSource, cases, store: EmbeddingStore, refine: bool = False):
    """Mean per-case, per-class test Dice of a universal checkpoint's automatic label maps
    (:func:`medseg.eval.automatic.score_label_maps`); with ``refine`` also (second value) of the masks the
    promptable path makes from the automatic first box of each class
    (:meth:`medseg.infer.automatic.AutoSegmenter.refine_from_first_boxes`; no ground truth used)."""
    seg = AutoSegmenter(build_model("universal", checkpoint=checkpoint), device="cpu")
    refined: dict[str, dict[int, np.ndarray]] = {}

    def segment(case):
        seg.set_embedding(store.embedding(case.stem)[None], store.original_hw(case.stem))
        labels = seg.segment_embedding(task.name).labels
        if refine:
            refined[case.stem] = seg.refine_from_first_boxes(labels, task.classes)
        return labels

    rows, _ = score_label_maps(segment, cases, list(task.classes), progress=False)
    dice = float(np.mean([r["dice"] for r in rows]))
    if not refine:
        return dice
    rows, _ = score_label_maps(lambda case: refined[case.stem], cases, list(task.classes), progress=False)
    return dice, float(np.mean([r["dice"] for r in rows]))


def reference_dice(task: TaskSource, cases, store: EmbeddingStore) -> float:
    """Published LiteMedSAM, one ground-truth box per object (evaluate's protocol), cached embeddings."""
    predictor = CachedPredictor(build_model("litemedsam", pretrained=True, weights="published"), store)
    rows = [row for case in cases for row in evaluate_case(predictor, case)[0]]
    return float(Report(str(task.root), "test", "box", cases=rows).summary["dice"])


def unet_dice(checkpoints: dict[int, Path], task: TaskSource, cases) -> float:
    """U-Net(s) -> label map (later classes win where they overlap, so the cup lies inside the disc),
    scored by the automatic protocol (:func:`medseg.eval.automatic.score_label_maps`)."""
    models = {cid: build_model("unet", checkpoint=path) for cid, path in checkpoints.items()}
    rows, _ = score_label_maps(lambda case: predict_label_map(models, plane(load_image(case))), cases, list(task.classes),
                               progress=False)
    return float(np.mean([r["dice"] for r in rows]))


def universal_config(tasks: Path, overrides: list[str], device: str, quick: bool):
    return load_config(UNIVERSAL_CONFIG, [f"universal.tasks={tasks}", f"train.device={device}", *COMMON,
                                          *(QUICK["settings"] if quick else []), *overrides])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two tasks + isbi, tiny budgets (a few minutes)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (budgets stay the same)")
    parser.add_argument("--budget", type=float, help=f"seconds per task (default {BUDGET_PER_TASK_S})")
    parser.add_argument("--work", type=Path, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="output JSON (default benchmarks/results/universal[_quick].json)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse runs already finished in --work (their summary.json); scores are recomputed")
    args = parser.parse_args()
    require_data(args.data)
    set_threads()
    start = time.perf_counter()
    budget = args.budget or (QUICK["budget"] if args.quick else BUDGET_PER_TASK_S)
    base = QUICK["tasks"] if args.quick else BASE_TASKS
    test_limit = QUICK["test_limit"] if args.quick else None
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        tasks_path = task_file(args.data.resolve(), work, [*base, NEW_TASK])
        tasks = load_tasks(tasks_path)

        def run(config, name: str, seconds: float) -> dict:
            """timed_train, or with --reuse the summary of an earlier run of the same name in --work."""
            summary = work / name / "summary.json"
            if args.reuse and summary.is_file():
                print(f"\n(reusing {work / name}: {summary.read_text().strip()[:120]}...)")
                return {**json.loads(summary.read_text()), "reused": True}
            result = timed_train(config, work / name, seconds)
            summary.write_text(json.dumps({**result, "checkpoint": str(result["checkpoint"])}))
            return result
        encoder = build_model("universal", pretrained=True, weights="published")
        tests = {name: test_store(encoder, tasks[name], test_limit) for name in [*base, NEW_TASK]}
        rows = {name: {"classes": {str(k): v for k, v in tasks[name].classes.items()}} for name in tests}

        print(f"\n== universal: {', '.join(base)} ({budget * len(base):.0f} s) ==")
        config = universal_config(tasks_path, [f"universal.train_tasks=[{', '.join(base)}]"], args.device, args.quick)
        uni = run(config, "universal", budget * len(base))
        before = {name: auto_dice(uni["checkpoint"], tasks[name], *tests[name]) for name in base}

        variants, adding = {}, {}
        for way, settings in EXTEND.items():
            print(f"\n== adding {NEW_TASK} ({way}, {budget:.0f} s) ==")
            extra = [f"universal.replay=[{', '.join(base)}]", f"universal.weights=[{len(base)}, {', '.join('1' * len(base))}]"
                     ] if way == "replay" else []
            config = universal_config(tasks_path, [f"universal.train_tasks=[{NEW_TASK}]", *settings, *extra,
                                                   f"model.checkpoint={uni['checkpoint']}"], args.device, args.quick)
            variants[way] = run(config, f"universal_added_{way}", budget)
            scores = {name: auto_dice(variants[way]["checkpoint"], tasks[name], *tests[name], refine=way == "lowrank")
                      for name in [*base, NEW_TASK]}
            adding[way] = scores
        final = adding["lowrank"]
        after = {name: d for name, (d, _) in final.items()}
        forgetting = {name: round(before[name] - after[name], 4) for name in base}

        per_dataset, unet = {}, {}
        training = {"universal": _plain(uni), **{f"added_{w}": _plain(v) for w, v in variants.items()}}
        for name in [*base, NEW_TASK]:
            print(f"\n== {name}: per-dataset automatic and U-Net ({budget:.0f} s each) ==")
            config = universal_config(tasks_path, [f"universal.train_tasks=[{name}]"], args.device, args.quick)
            single = run(config, f"single_{name}", budget)
            per_dataset[name] = auto_dice(single["checkpoint"], tasks[name], *tests[name])
            classes = list(tasks[name].classes)
            nets = {}
            for cid in classes:
                fg = f"[{cid}]" if len(classes) > 1 else "[]"
                u_config = load_config(UNET_CONFIG, [f"data.root={tasks[name].root}", f"data.foreground_ids={fg}",
                                                     f"train.device={args.device}", *COMMON,
                                                     *(QUICK["settings"] if args.quick else [])])
                nets[cid] = run(u_config, f"unet_{name}_{cid}", budget / len(classes))
            unet[name] = unet_dice({cid: n["checkpoint"] for cid, n in nets.items()}, tasks[name], tests[name][0])
            training[name] = {"per_dataset": _plain(single), "unet": {str(c): _plain(n) for c, n in nets.items()}}

        for name in rows:
            rows[name].update({
                "universal_dice": round(after[name], 4), "universal_dice_before_adding": (
                    round(before[name], 4) if name in before else None),
                "auto_box_refined_dice": round(final[name][1], 4),
                "per_dataset_dice": round(per_dataset[name], 4), "unet_dice": round(unet[name], 4),
                "prompted_reference_dice": round(reference_dice(tasks[name], *tests[name]), 4),
                "test_cases": len(tests[name][0]), "added_later": name == NEW_TASK})
    mean = {k: round(float(np.mean([r[k] for r in rows.values()])), 4)
            for k in ("universal_dice", "auto_box_refined_dice", "per_dataset_dice", "unet_dice",
                      "prompted_reference_dice")}
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    result = {"threads": THREADS, "torch": torch.__version__, "device": device, "quick": args.quick,
              "budget_per_task_s": budget, "datasets": rows, "mean": mean,
              "forgetting": {"per_task": forgetting, "mean": round(float(np.mean(list(forgetting.values()))), 4),
                             "max": round(float(max(forgetting.values())), 4), "way": "lowrank"},
              **{f"adding_{way}": other_way(adding[way], before) for way in ("tokens", "replay")},
              "checkpoints": {"universal": 1, "per_dataset": len(rows), "unet": sum(len(t["unet"]) for n, t in
                                                                                    training.items() if n in rows)},
              "training": training, "seconds": round(time.perf_counter() - start, 1)}
    print_table(result)
    out = args.json or REPO / "benchmarks" / "results" / f"universal{'_quick' if args.quick else ''}.json"
    print(f"\nwrote {write_json(result, out)}")
    figure = out.with_suffix(".png")
    save_figure(result, figure)
    print(f"wrote {figure}")
    return 0


def other_way(scores: dict, before: dict[str, float]) -> dict:
    """{"new_task_dice", "forgetting": {"per_task", "mean", "max"}} of one way of adding the new task."""
    forgetting = {name: round(before[name] - float(np.atleast_1d(scores[name])[0]), 4) for name in before}
    return {"new_task_dice": round(float(np.atleast_1d(scores[NEW_TASK])[0]), 4),
            "forgetting": {"per_task": forgetting, "mean": round(float(np.mean(list(forgetting.values()))), 4),
                           "max": round(float(max(forgetting.values())), 4)}}


def _plain(summary: dict) -> dict:
    return {k: (str(Path(v).name) if k == "checkpoint" else v) for k, v in summary.items()}


def print_table(result: dict) -> None:
    print(f"\ntest Dice, automatic (no prompt) unless marked; {result['budget_per_task_s']:.0f} s per task, "
          f"{result['threads']} threads, {result['device']}")
    print(f"{'dataset':<22}{'universal':>10}{'+auto box':>10}{'per-dataset':>12}{'U-Net':>8}{'GT-box ref.':>12}")
    for name, r in [*result["datasets"].items(), ("mean", result["mean"])]:
        mark = " (added)" if r.get("added_later") else ""
        print(f"{name + mark:<22}{r['universal_dice']:>10.3f}{r['auto_box_refined_dice']:>10.3f}"
              f"{r['per_dataset_dice']:>12.3f}{r['unet_dice']:>8.3f}{r['prompted_reference_dice']:>12.3f}")
    f = result["forgetting"]
    print(f"forgetting after adding {NEW_TASK} (new tokens + its low-rank update): mean {f['mean']:+.4f}, "
          f"max {f['max']:+.4f} Dice")
    for way, label in (("tokens", "new tokens only"), ("replay", "the shared head + replay")):
        r = result[f"adding_{way}"]
        print(f"adding it with {label} instead: new-task Dice {r['new_task_dice']:.3f}, forgetting "
              f"mean {r['forgetting']['mean']:+.4f}, max {r['forgetting']['max']:+.4f}")


def save_figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    keys = [("universal_dice", "universal (1 checkpoint)"), ("per_dataset_dice", "per-dataset automatic"),
            ("unet_dice", "MONAI U-Net per dataset"), ("prompted_reference_dice", "LiteMedSAM + GT box (reference)")]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        ax.bar(np.arange(len(names)) + i * width, [result["datasets"][n][key] for n in names], width, label=label)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, [n.replace("_", "\n", 1) for n in names], fontsize=8)
    ax.set_ylabel("test Dice")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(f"automatic segmentation, {result['budget_per_task_s']:.0f} s per task on {result['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
