"""Distillation benchmark: the HR-small student (1024x1024, gated linear attention) against its teacher
LiteMedSAM (256x256), zero-shot and after fine-tuning on fine structures.

Stages (each can run alone):

1. distil (``--distill``): ``configs/distill_hr_small.yaml`` for ``--budget`` seconds of wall-clock time
   (one timed epoch, then a resumed run with the epochs that fit, as benchmarks/finetune.py), on every
   2D train-split image of ../shared/data plus unlabeled/ (or the folders of ``--pack DIR``: one plain
   image folder per source, e.g. copies shrunk to fit a GPU machine). On CUDA: batch 16, bf16, augmented
   images with the teacher run on the fly; on the CPU: batch 4, cached teacher embeddings, no image
   augmentation. Writes ``OUT/student_encoder.safetensors`` (the image encoder only) and the run's curves.
2. zero-shot (``--zero-shot``): test-split box Dice (``medseg evaluate``'s protocol: one box per
   ground-truth component) of the teacher and of the student = distilled encoder + the teacher's
   prompt encoder and mask decoder, on every 2D set with a test split.
3. fine-tuned (``--finetune``): on the fine-structure sets (isbi2012_em membranes, dsb2018_nuclei, the
   drishti cup = class 2) each model's mask decoder is fine-tuned on the train split for
   ``FINETUNE_BUDGET_S`` seconds (teacher: decoder from cached embeddings, objective
   "supervised_cached"; student: decoder and its stride-4/8 fusion head at 1024x1024, objective
   "supervised", encoder frozen), best by val Dice, then test Dice of the target class.

    python benchmarks/distill.py --distill --device cuda --budget 420 --pack gpu_pack/images --out OUT
    python benchmarks/distill.py --zero-shot --finetune --student OUT/student_encoder.safetensors
    python benchmarks/distill.py --quick     # all three, tiny: a protocol smoke test (~14 min: the 1024 student
                                             # validates on all of dsb2018's val nuclei)

JSON shape: ``{"zero_shot": {NAME: {"teacher_dice", "student_dice"}}, "finetuned": {NAME: {"teacher_dice",
"student_dice"}}, "distill": {...}}``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, EMBEDDING_CACHE, REPO, THREADS, require_data, set_threads, timed_train, write_json  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from medseg.data.datasets import dataset_cases, evenly_spaced  # noqa: E402
from medseg.eval.evaluate import evaluate_case  # noqa: E402
from medseg.eval.report import Report  # noqa: E402
from medseg.infer import Predictor  # noqa: E402
from medseg.models import build_model  # noqa: E402
from medseg.models.build import DISTILLED, load_encoder_weights  # noqa: E402
from medseg.train import load_config  # noqa: E402
from medseg.train.embeddings import CachedPredictor, build_embeddings  # noqa: E402

CONFIG = REPO / "configs" / "distill_hr_small.yaml"
STUDENT, TEACHER = "hr-small", "litemedsam"
ZERO_SHOT_SETS = ["kvasir_seg", "ph2_derm", "dsb2018_nuclei", "busi", "drishti_gs1_odoc", "isbi2012_em"]
FINE_SETS = {"isbi2012_em": 1, "dsb2018_nuclei": 1, "drishti_gs1_odoc": 2}  # set -> class scored
FINETUNE_BUDGET_S = 180        # per model and set, full run
STEPS_PER_EPOCH = 15           # fine-tuning epochs of 15 steps (dsb2018 has 6716 train nuclei)
VAL_CASES = 5                  # val cases per fine-tuning validation
QUICK = {"distill_budget": 60, "finetune_budget": 20, "test_cases": 4, "limit": 6}
DEVICE_SETTINGS = {
    "cuda": ["train.batch_size=16", "train.amp=bf16", "data.augment=true", "data.num_workers=14"],
    "cpu": ["train.batch_size=4", "train.amp=off", "data.augment=false", "data.num_workers=0"],
}
COMMON = ["model.weights=published", "train.progress=false", "train.log_every=50", "distill.val_sources=[]", f"train.cache_dir={EMBEDDING_CACHE}"]


def distil(args, out: Path, work: Path) -> dict:
    """Stage 1: distil the student's encoder; returns the run summary and writes the encoder to ``out``."""
    sources = sorted(str(p) for p in args.pack.iterdir() if p.is_dir()) if args.pack else None
    overrides = [f"train.device={args.device}", *DEVICE_SETTINGS["cuda" if args.device.startswith("cuda") else "cpu"],
                 *COMMON]
    if sources:
        overrides.append(f"distill.sources=[{', '.join(sources)}]")
    else:
        overrides.append("distill.sources=[" + ", ".join(str(args.data / s) for s in
                                                         [*ZERO_SHOT_SETS, "unlabeled"]) + "]")
    if args.init_encoder:
        overrides.append(f"model.init_encoder={args.init_encoder}")
    if args.lr:
        overrides += [f"optim.lr={args.lr}", "optim.warmup_steps=50"]
    if args.teacher_encoder:
        overrides += [f"distill.teacher_checkpoint={args.teacher_encoder}", "model.pretrained=false"]
    if args.quick or args.limit:
        overrides.append(f"distill.limit={args.limit or QUICK['limit']}")
    if args.workers is not None:
        overrides.append(f"data.num_workers={args.workers}")
    config = load_config(CONFIG, overrides)
    if config.data.num_workers and shutil.disk_usage("/dev/shm").free < 4 * 2**30:
        torch.multiprocessing.set_sharing_strategy("file_system")  # a small /dev/shm cannot hold the batches
    run = work / "distill_run"
    summary = {k: v for k, v in timed_train(config, run, args.budget).items() if k != "checkpoint"}
    state = {k: v for k, v in _load(run / "latest.safetensors").items() if k.startswith("image_encoder.")}
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "student_encoder.safetensors"))
    for name in ("metrics.csv", "steps.csv", "curves.png", "config.yaml"):
        if (run / name).is_file():
            shutil.copy(run / name, out / f"distill_{name}")
    print(f"distilled {summary['epochs']} epochs ({summary['steps']} steps, {summary['seconds']} s): "
          f"loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}", flush=True)
    return {**summary, "images": _count_images(config), "device": args.device, "settings": overrides}


def _load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _count_images(config) -> int:
    from medseg.data.datasets import source_cases

    return sum(len(source_cases(s, config.distill.limit)) for s in config.distill.sources)


def student_model(encoder: Path, checkpoint: Path | None = None) -> torch.nn.Module:
    """The distilled encoder with the teacher's prompt encoder and mask decoder (or a fine-tuned checkpoint)."""
    if checkpoint is not None:
        return build_model(STUDENT, checkpoint=checkpoint)
    model = build_model(STUDENT, pretrained=True, weights="published")
    load_encoder_weights(model, encoder)
    return model.eval()


def box_dice(predictor, cases, root: Path, class_id: int | None = None) -> float | None:
    """Mean box Dice over (case, class) rows of evaluate's protocol; only ``class_id`` if given."""
    rows = [r for case in cases for r in evaluate_case(predictor, case)[0]
            if class_id is None or r["class_id"] == class_id]
    return Report(str(root), "test", "box", cases=rows).summary["dice"] if rows else None


def zero_shot(args, encoder: Path) -> dict:
    """Stage 2: teacher vs student box Dice on each test split."""
    teacher, student = build_model(TEACHER, pretrained=True, weights="published"), student_model(encoder)
    out = {}
    for name in ZERO_SHOT_SETS:
        root = args.data / name
        cases = evenly_spaced(dataset_cases(root, "test"), QUICK["test_cases"] if args.quick else None)
        store = build_embeddings(teacher, cases, EMBEDDING_CACHE, label=f"{name}-test-all")
        start = time.perf_counter()
        t = box_dice(CachedPredictor(teacher, store), cases, root)
        s = box_dice(Predictor(student, device="cpu"), cases, root)
        out[name] = {"teacher_dice": t, "student_dice": s, "cases": len(cases),
                     "student_seconds": round(time.perf_counter() - start, 1)}
        print(f"zero-shot {name}: teacher {_fmt(t)}  student {_fmt(s)}  ({len(cases)} cases)", flush=True)
    return out


def _finetune_config(kind: str, root: Path, encoder: Path, work: Path, quick: bool):
    common = [f"data.root={root}", "train.device=cpu", "train.amp=off", "train.progress=false", "data.num_workers=0",
              "train.log_every=1000", f"train.cache_dir={EMBEDDING_CACHE}", "data.box_jitter=0.1", "optim.lr=1e-4", "optim.warmup_steps=5",
              f"train.steps_per_epoch={STEPS_PER_EPOCH}", f"data.val_limit={VAL_CASES}"]
    if quick:
        common += ["data.limit=4", "train.batch_size=2"]
    if kind == "teacher":
        return load_config(REPO / "configs" / "finetune_cached_kvasir.yaml", common)
    start = work / "student_start.safetensors"
    if not start.is_file():
        save_file(student_model(encoder).state_dict(), str(start))
    return load_config(None, common + [f"model.name={STUDENT}", f"model.checkpoint={start}", "model.trainable=decoder",
                                       "train.objective=supervised", "train.batch_size=2" if quick else
                                       "train.batch_size=4", "data.cache=false"])


def finetune(args, encoder: Path, work: Path) -> dict:
    """Stage 3: both models' decoders fine-tuned with the same budget on each fine-structure set."""
    budget = QUICK["finetune_budget"] if args.quick else FINETUNE_BUDGET_S
    out = {}
    for name, class_id in ((n, FINE_SETS[n]) for n in args.fine_sets):
        root = args.data / name
        cases = evenly_spaced(dataset_cases(root, "test"), QUICK["test_cases"] if args.quick else None)
        row = {"class_id": class_id, "budget_s": budget}
        for kind in ("teacher", "student"):
            config = _finetune_config(kind, root, encoder, work, args.quick)
            run = work / f"{name}_{kind}"
            row[f"{kind}_training"] = {k: v for k, v in timed_train(config, run, budget).items() if k != "checkpoint"}
            model = build_model(config.model.name, checkpoint=run / "best.safetensors")
            if kind == "teacher":
                store = build_embeddings(model, cases, EMBEDDING_CACHE, label=f"{name}-test-all")
                predictor = CachedPredictor(model, store)
            else:
                predictor = Predictor(model, device="cpu")
            row[f"{kind}_dice"] = box_dice(predictor, cases, root, class_id)
        out[name] = row
        print(f"fine-tuned {name} (class {class_id}, {budget} s each): teacher {_fmt(row['teacher_dice'])}  "
              f"student {_fmt(row['student_dice'])}", flush=True)
    return out


def _shown(path: Path) -> str:
    """A path as the JSON records it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_table(result: dict) -> None:
    for stage in ("zero_shot", "finetuned"):
        rows = result.get(stage) or {}
        if rows:
            print(f"\n{stage:<18}{'teacher':>9}{'student':>9}{'diff':>8}   (test box Dice)")
            for name, r in rows.items():
                diff = None if None in (r["teacher_dice"], r["student_dice"]) else r["student_dice"] - r["teacher_dice"]
                print(f"{name:<18}{_fmt(r['teacher_dice']):>9}{_fmt(r['student_dice']):>9}"
                      f"{'' if diff is None else f'{diff:+.4f}':>8}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distill", action="store_true", help="stage 1: distil (else use --student)")
    parser.add_argument("--zero-shot", action="store_true", help="stage 2")
    parser.add_argument("--finetune", action="store_true", help="stage 3")
    parser.add_argument("--quick", action="store_true", help="all stages on a few images with tiny budgets")
    parser.add_argument("--student", type=Path, default=DISTILLED[STUDENT][0],
                        help="a distilled encoder (default: the one medseg ships, models/assets)")
    parser.add_argument("--device", default="cpu", help="where stage 1 runs: cpu or cuda")
    parser.add_argument("--budget", type=float, default=1800, help="stage 1 wall-clock seconds")
    parser.add_argument("--pack", type=Path, help="stage 1 sources: one image folder per source inside this folder")
    parser.add_argument("--teacher-encoder", type=Path, help="stage 1 teacher weights (image encoder only is enough)")
    parser.add_argument("--limit", type=int, help="stage 1: images per source (smoke runs)")
    parser.add_argument("--init-encoder", type=Path, help="stage 1: continue from this distilled encoder")
    parser.add_argument("--lr", type=float, help="stage 1: peak learning rate (default: the config's)")
    parser.add_argument("--workers", type=int, help="stage 1: data-loader processes (default 14 on CUDA, 0 on CPU)")
    parser.add_argument("--fine-sets", nargs="+", default=list(FINE_SETS), choices=list(FINE_SETS),
                        help="stage 3 datasets")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, help="where stage 1 writes the encoder and curves (default "
                                                 "benchmarks/results/distill_run; with --quick a temporary folder)")
    parser.add_argument("--json", type=Path, help="output JSON (default benchmarks/results/distill[_quick].json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.distill = args.zero_shot = args.finetune = True
        args.budget = QUICK["distill_budget"]
    if not (args.distill or args.zero_shot or args.finetune):
        parser.error("choose --distill, --zero-shot and/or --finetune (or --quick)")
    if args.pack is None or args.zero_shot or args.finetune:
        require_data(args.data)
    set_threads()
    torch.manual_seed(0)
    start, result = time.time(), {"threads": THREADS, "torch": torch.__version__, "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="medseg_distill_") as tmp:
        work = Path(tmp)
        encoder = args.student
        if args.out is None:  # a smoke run never replaces the recorded stage-1 results
            args.out = work / "distill_run" if args.quick else REPO / "benchmarks" / "results" / "distill_run"
        if args.distill:
            result["distill"] = distil(args, args.out, work)
            encoder = args.out / "student_encoder.safetensors"
        result["student_encoder"] = _shown(encoder)
        if args.zero_shot:
            result["zero_shot"] = zero_shot(args, encoder)
        if args.finetune:
            result["finetuned"] = finetune(args, encoder, work)
    result["seconds"] = round(time.time() - start, 1)
    print_table(result)
    default = REPO / "benchmarks" / "results" / f"distill{'_quick' if args.quick else ''}.json"
    out = args.json or (args.out / "distill.json" if args.distill and not args.zero_shot else default)
    print(f"\nwrote {write_json(result, out)} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
