"""The weights medseg ships against the published ones, side by side, on every 2D test split.

Per 2D set of configs/tasks_2d.yaml that has a test split: box Dice (the ``medseg evaluate`` protocol,
one box per ground-truth component) and Dice after 1, 3 and 5 clicks (the ``medseg evaluate --prompt
clicks --first point`` protocol: a first click at the object's deepest pixel, then one click into the
largest error each round, the previous logits as the mask prompt), for

* ``litemedsam`` with its published prompt encoder + mask decoder and with the shipped click-trained ones;
* ``hr-small`` (the distilled student) with the same two decoders: the student against its teacher.

Each image is encoded once per encoder (LiteMedSAM's embeddings come from the embedding cache); both
decoders read the same embedding. Then, per task the shipped universal model knows, its test Dice
with no prompt at all (``medseg evaluate --auto --task T``'s protocol), beside the per-dataset
automatic models and U-Nets of ``benchmarks/results/universal.json``. Nothing is trained or tuned here.

    python benchmarks/shipped.py [--quick] [--json OUT] [--data DIR] [--part prompts|automatic]
    python benchmarks/shipped.py --ship runs/clicks_2d      # package a run's best decoder (then benchmark it)
    python benchmarks/shipped.py --ship-universal runs/universal_shipped   # ... a universal run's head

``--quick`` takes 3 evenly spaced test cases of 2 sets (a smoke test, a few minutes); dsb2018's click
columns take 4 of its test images (see ``CLICK_CASES``). ``--ship RUN``
writes the prompt encoder + mask decoder of ``RUN/best.safetensors`` (a ``medseg train
configs/clicks_2d.yaml`` run) as the package's float16 asset with its provenance JSON; a full
benchmark run afterwards adds its figures to that JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, EMBEDDING_CACHE, REPO, require_data, set_threads, write_json  # noqa: E402

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from medseg.data.datasets import dataset_cases, evenly_spaced  # noqa: E402
from medseg.eval.evaluate import evaluate_case  # noqa: E402
from medseg.eval.interactive import interact_case  # noqa: E402
from medseg.data.datasets import class_names  # noqa: E402
from medseg.infer import Predictor  # noqa: E402
from medseg.models import build_model  # noqa: E402

SETS = ["kvasir_seg", "ph2_derm", "dsb2018_nuclei", "busi", "drishti_gs1_odoc", "isbi2012_em"]
# Clicks on dsb2018 simulate 5 rounds for each of up to 147 nuclei an image (~100 s an image here): its
# click columns take 4 evenly spaced test images, its box column all of them.
CLICK_CASES = {"dsb2018_nuclei": 4}
CLICKS = (1, 3, 5)
MODELS = ("litemedsam", "hr-small")
WEIGHTS = ("published", "shipped")


class SharedEncoding:
    """Predictors of one encoder with different decoders: an image is encoded once, by the first
    predictor (the last image's embedding is kept), and every view of it decodes that embedding."""

    def __init__(self, predictors: dict[str, Predictor]) -> None:
        self.predictors, self.key = predictors, None
        self.first = next(iter(predictors.values()))

    def view(self, name: str) -> "_View":
        return _View(self, self.predictors[name])

    def encode(self, image: np.ndarray, modality: str | None) -> None:
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape) + str(modality)
        if key != self.key:
            self.first.set_image(image, modality)
            self.key = key


class _View:
    def __init__(self, shared: SharedEncoding, predictor: Predictor) -> None:
        self.shared, self.predictor = shared, predictor

    def set_image(self, image: np.ndarray, modality: str | None = None) -> None:
        self.shared.encode(image, modality)
        first, mine = self.shared.first, self.predictor
        mine.embedding, mine.features, mine.record = first.embedding, first.features, first.record

    def predict(self, **kwargs):
        return self.predictor.predict(**kwargs)


def cached_first(model, folder: Path, cases):
    """LiteMedSAM's first predictor reads the embedding cache (the images of ``cases``, once)."""
    from medseg.train.embeddings import CachedPredictor, build_embeddings

    store = build_embeddings(model, cases, cache_dir=EMBEDDING_CACHE, label=f"{folder.name}-test-all", progress=False)
    return CachedPredictor(model, store)


def evaluate_set(name: str, folder: Path, limit: int | None) -> dict:
    split = "test"
    cases = evenly_spaced(dataset_cases(folder, split), limit)
    click_cases = {c.stem for c in evenly_spaced(cases, CLICK_CASES.get(name))}
    names = class_names(folder)
    out = {}
    for model_name in MODELS:
        models = {w: build_model(model_name, pretrained=True, weights=w) for w in WEIGHTS}
        first = (cached_first(models["published"], folder, cases) if model_name == "litemedsam"
                 else Predictor(models["published"], device="cpu"))
        shared = SharedEncoding({"published": first, **{w: Predictor(models[w], device="cpu") for w in WEIGHTS[1:]}})
        rows = {w: {"box": [], "clicks": []} for w in WEIGHTS}
        start = time.perf_counter()
        for case in tqdm(cases, desc=f"{name} {model_name}", unit="case", leave=False):
            for w in WEIGHTS:
                view = shared.view(w)
                rows[w]["box"].extend(r["dice"] for r in evaluate_case(view, case, prompt="box", names=names)[0])
                if case.stem in click_cases:
                    rows[w]["clicks"].extend(r["dice_per_round"] for r in interact_case(view, case, max(CLICKS),
                                                                                       "point", names=names))
        for w in WEIGHTS:
            clicks = np.array(rows[w]["clicks"], dtype=float).reshape(-1, max(CLICKS))
            out[f"{model_name}/{w}"] = {"box_dice": float(np.mean(rows[w]["box"])),
                                        **{f"clicks_{k}_dice": float(clicks[:, k - 1].mean()) for k in CLICKS},
                                        "n_rows": len(rows[w]["box"]), "n_click_rows": len(clicks)}
        out[f"{model_name}/seconds"] = round(time.perf_counter() - start, 1)
    return {"split": split, "n_cases": len(cases), "n_click_cases": len(click_cases), "results": out}


def print_table(result: dict) -> None:
    if "sets" in result:
        _print_prompts(result)
    if "automatic" in result:
        print(f"\n{'task':<18}{'automatic (shipped)':>20}{'per-dataset 100 s':>19}{'U-Net 100 s':>13}")
        for name, r in result["automatic"].items():
            peers = [r["per_dataset_dice_100s"], r["unet_dice_100s"]]
            print(f"{name:<18}{r['auto_dice']:>20.3f}" + "".join(f"{p:>{w}.3f}" if p is not None else f"{'-':>{w}}"
                                                               for p, w in zip(peers, (19, 13))))


def _print_prompts(result: dict) -> None:
    head = f"{'set':<18}{'model':<12}{'weights':<11}{'box':>7}" + "".join(f"{f'{k} click':>9}" for k in CLICKS)
    print(head + "\n" + "-" * len(head))
    for name, entry in result["sets"].items():
        for model_name in MODELS:
            for w in WEIGHTS:
                r = entry["results"][f"{model_name}/{w}"]
                print(f"{name:<18}{model_name:<12}{w:<11}{r['box_dice']:>7.3f}"
                      + "".join(f"{r[f'clicks_{k}_dice']:>9.3f}" for k in CLICKS))
    print("\nshipped - published (litemedsam): " + "; ".join(
        f"{n} box {d['box']:+.3f}, 1 click {d['clicks_1']:+.3f}" for n, d in result["gain"].items()))


def gains(sets: dict) -> dict:
    """Per set: the shipped decoder's Dice minus the published one's, on LiteMedSAM."""
    out = {}
    for name, entry in sets.items():
        pub, ship = entry["results"]["litemedsam/published"], entry["results"]["litemedsam/shipped"]
        out[name] = {"box": ship["box_dice"] - pub["box_dice"],
                     **{f"clicks_{k}": ship[f"clicks_{k}_dice"] - pub[f"clicks_{k}_dice"] for k in CLICKS}}
    return out


def _run_provenance(run: Path, what: str, data: str, ship_flag: str) -> tuple[dict, dict]:
    """(best.json of a run, the provenance of the weights it ships: what, data, steps, seed, command, ...)."""
    import json

    best = json.loads((run / "best.json").read_text())
    lines = (run / "metrics.csv").read_text().splitlines()
    history = [dict(zip(lines[0].split(","), row.split(","))) for row in lines[1:]]
    config = best["config"]
    made = run / "commands.txt"  # where present: the commands that made the run (a resumed run has several)
    config_file = "configs/clicks_2d.yaml" if ship_flag == "--ship" else "configs/universal_shipped.yaml"
    commands = [*(made.read_text().splitlines() if made.is_file() else
                  [f"medseg train {config_file} --run-dir {run}"]), f"python benchmarks/shipped.py {ship_flag} {run}"]
    keys = ("click_rounds", "first_prompt", "multimask", "batch_size", "time_budget_s", "steps_per_epoch")
    provenance = {
        "what": what, "data": data, "steps": best["step"], "epoch": best["epoch"], "seed": config["train"]["seed"],
        "command": "; ".join(commands), "training": {k: config["train"][k] for k in keys},
        "optim": config["optim"], "val_dice": best["best_dice"], "history": history,
        "device": "2-core CPU, float32", "date": best["saved_at"][:10],
        "figures": "written by the full run of python benchmarks/shipped.py",
    }
    return best, provenance


def ship(run: Path, overwrite: bool = False, universal: bool = False) -> int:
    """Write ``run``'s best prompt encoder + mask decoder (or, with ``universal``, its automatic head) as
    the package's shipped weights, with provenance."""
    import json

    from medseg.models.build import CLICK_DECODER, DECODER_PARTS, HEAD_PARTS, UNIVERSAL_HEAD
    from medseg.models.weights import load_state_dict, save_parts_fp16

    config = json.loads((run / "best.json").read_text())["config"]
    if universal:
        u = config["universal"]
        best, provenance = _run_provenance(
            run, "the automatic head of medseg's universal model (task + modality prior tokens, self-prompt, its own "
                 "mask decoder) on LiteMedSAM's published image encoder, frozen; stored as float16 (the task table "
                 "as bytes), loaded as float32",
            f"the train splits of {', '.join(u['train_tasks'])} ({u['tasks']}): cached LiteMedSAM embeddings; "
            f"val: the first {config['data']['val_limit']} val images of each; no test image", "--ship-universal")
        provenance["universal"] = u
        parts, target = HEAD_PARTS, UNIVERSAL_HEAD
    else:
        d = config["data"]
        best, provenance = _run_provenance(
            run, "LiteMedSAM's prompt encoder + mask decoder, trained by medseg to answer clicks as well as boxes "
                 "(the image encoder is the published one, frozen); stored as float16, loaded as float32",
            f"the train splits of every task of {d['tasks']} ({', '.join(d['task_names']) or 'all'}): cached "
            f"LiteMedSAM embeddings, at most {d['max_objects_per_case']} objects per image; val: the first "
            f"{d['val_limit']} val images of each set with a split; no test image", "--ship")
        parts, target = DECODER_PARTS, CLICK_DECODER
    path = save_parts_fp16(load_state_dict(run / "best.safetensors"), parts, target, provenance, overwrite=overwrite)
    print(f"{run / 'best.safetensors'} (epoch {best['epoch']}, step {best['step']}, val Dice {best['best_dice']:.4f}) "
          f"-> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def evaluate_automatic(data: Path, limit: int | None) -> dict:
    """Per task the shipped universal model knows: test Dice of its label maps with no prompt at all
    (``medseg evaluate --auto --task T``'s protocol: per case and class), from cached LiteMedSAM embeddings;
    beside it the per-dataset automatic model and U-Net of benchmarks/results/universal.json (100 s each)."""
    import json

    import yaml

    from medseg.data.tasks import load_tasks
    from medseg.eval.automatic import score_label_maps
    from medseg.infer.automatic import AutoSegmenter
    from medseg.train.embeddings import build_embeddings

    model = build_model("universal", pretrained=True)
    seg = AutoSegmenter(model, device="cpu")
    entries = yaml.safe_load((REPO / "configs" / "tasks_2d.yaml").read_text())
    for entry in entries.values():
        entry["root"] = str(data / Path(entry["root"]).name)
    with tempfile.TemporaryDirectory() as work:
        task_path = Path(work) / "tasks.yaml"
        task_path.write_text(yaml.safe_dump(entries, sort_keys=False))
        tasks = load_tasks(task_path)
    peers_path = REPO / "benchmarks" / "results" / "universal.json"
    peers = json.loads(peers_path.read_text())["datasets"] if peers_path.is_file() else {}
    out = {}
    for name in model.tasks:
        task = tasks[name]
        cases = evenly_spaced(dataset_cases(task.root, "test"), limit)
        store = build_embeddings(model, cases, EMBEDDING_CACHE, label=f"{task.root.name}-test-all",
                                 modality=task.normalisation, progress=False)

        def segment(case):
            seg.set_embedding(store.embedding(case.stem)[None], store.original_hw(case.stem))
            return seg.segment_embedding(name).labels

        rows, _ = score_label_maps(segment, cases, list(task.classes), progress=False)
        peer = peers.get(name, {})
        out[name] = {"auto_dice": float(np.mean([r["dice"] for r in rows])), "n_cases": len(cases),
                     "per_dataset_dice_100s": peer.get("per_dataset_dice"), "unet_dice_100s": peer.get("unet_dice"),
                     "universal_500s_dice": peer.get("universal_dice")}
    return out


def record_figures(result: dict) -> None:
    """Put a full run's figures into the shipped weights' provenance JSONs."""
    import json

    from medseg.models.build import CLICK_DECODER, UNIVERSAL_HEAD
    from medseg.models.weights import provenance_path

    figures = {CLICK_DECODER: "sets", UNIVERSAL_HEAD: "automatic"}
    for weights, key in figures.items():
        path = provenance_path(weights)
        if key not in result or not path.is_file():
            continue
        provenance = json.loads(path.read_text())
        provenance["figures"] = {"command": "python benchmarks/shipped.py", "protocol": result["protocol"][key],
                                 "test_dice": {n: e.get("results", e) for n, e in result[key].items()}}
        path.write_text(json.dumps(provenance, indent=1) + "\n")


PROTOCOL = {"sets": "box: one box per component (medseg evaluate); clicks: medseg evaluate --prompt clicks --first "
                    "point (deepest-pixel first click, then one click into the largest error)",
            "automatic": "no prompt: medseg evaluate --auto --task T (label map per case, Dice per case and class)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 cases of 2 sets: a smoke test")
    parser.add_argument("--json", type=Path, help="output JSON (default benchmarks/results/shipped[_quick].json)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--part", choices=("all", "prompts", "automatic"), default="all",
                        help="prompts: box and click Dice; automatic: the shipped universal model with no prompt; "
                             "one part alone replaces that part of an existing --json")
    parser.add_argument("--resume", action="store_true", help="keep the sets an interrupted run wrote to --json")
    parser.add_argument("--ship", type=Path, metavar="RUN", help="package RUN's best decoder as the shipped one")
    parser.add_argument("--ship-universal", type=Path, metavar="RUN",
                        help="package RUN's best universal head (configs/universal_shipped.yaml) as the shipped one")
    parser.add_argument("--overwrite", action="store_true", help="with --ship: replace the shipped files")
    args = parser.parse_args(argv)
    if args.ship or args.ship_universal:
        return ship(args.ship or args.ship_universal, args.overwrite, universal=args.ship_universal is not None)
    require_data(args.data)
    set_threads()
    args.json = args.json or REPO / "benchmarks" / "results" / f"shipped{'_quick' if args.quick else ''}.json"
    sets, limit = (SETS[:2], 3) if args.quick else (SETS, None)
    start = time.perf_counter()
    result = {"benchmark": "shipped", "quick": args.quick, "threads": 2, "clicks": list(CLICKS), "protocol": PROTOCOL}
    if (args.part != "all" or args.resume) and args.json.is_file():
        import json

        result = {**json.loads(args.json.read_text()), "protocol": PROTOCOL}
    if args.part in ("all", "prompts"):
        done = result.get("sets", {}) if args.resume else {}
        result["sets"] = {}
        for name in sets:  # the JSON is written after each set: --resume goes on from there
            result["sets"][name] = done.get(name) or evaluate_set(name, args.data / name, limit)
            write_json(result, args.json)
        result["gain"] = gains(result["sets"])
        result["seconds"] = round(time.perf_counter() - start, 1)
    if args.part in ("all", "automatic"):
        auto_start = time.perf_counter()
        result["automatic"] = evaluate_automatic(args.data, 3 if args.quick else None)
        result["automatic_seconds"] = round(time.perf_counter() - auto_start, 1)
    print_table(result)
    print(f"-> {write_json(result, args.json)}")
    if not args.quick:
        record_figures(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
