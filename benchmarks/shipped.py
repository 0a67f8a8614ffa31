"""The weights medseg ships against the published ones, side by side, on every 2D test split.

Per 2D set of configs/tasks_2d.yaml that has a test split: box Dice (the ``medseg evaluate`` protocol,
one box per ground-truth component) and Dice after 1, 3 and 5 clicks (the ``medseg evaluate --prompt
clicks --first point`` protocol: a first click at the object's deepest pixel, then one click into the
largest error each round, the previous logits as the mask prompt), for

* ``litemedsam`` with its published prompt encoder + mask decoder and with the shipped click-trained ones;
* ``hr-small`` (the distilled student) with the same two decoders: the student against its teacher.

Each image is encoded once per encoder (LiteMedSAM's embeddings come from the embedding cache); both
decoders read the same embedding. Nothing is trained or tuned here.

    python benchmarks/shipped.py [--quick] [--json OUT] [--data DIR]
    python benchmarks/shipped.py --ship runs/clicks_2d      # package a run's best decoder (then benchmark it)

``--quick`` takes 3 evenly spaced test cases of 2 sets (a smoke test, a few minutes). ``--ship RUN``
writes the prompt encoder + mask decoder of ``RUN/best.safetensors`` (a ``medseg train
configs/clicks_2d.yaml`` run) as the package's float16 asset with its provenance JSON; a full
benchmark run afterwards adds its figures to that JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
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
                rows[w]["clicks"].extend(r["dice_per_round"] for r in interact_case(view, case, max(CLICKS), "point",
                                                                                   names=names))
        for w in WEIGHTS:
            clicks = np.array(rows[w]["clicks"], dtype=float).reshape(-1, max(CLICKS))
            out[f"{model_name}/{w}"] = {"box_dice": float(np.mean(rows[w]["box"])),
                                        **{f"clicks_{k}_dice": float(clicks[:, k - 1].mean()) for k in CLICKS},
                                        "n_rows": len(rows[w]["box"])}
        out[f"{model_name}/seconds"] = round(time.perf_counter() - start, 1)
    return {"split": split, "n_cases": len(cases), "results": out}


def print_table(result: dict) -> None:
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


def ship(run: Path, overwrite: bool = False) -> int:
    """Write ``run``'s best prompt encoder + mask decoder as the shipped click decoder, with provenance."""
    import json

    from medseg.models.build import CLICK_DECODER, DECODER_PARTS
    from medseg.models.weights import load_state_dict, save_parts_fp16

    best = json.loads((run / "best.json").read_text())
    lines = (run / "metrics.csv").read_text().splitlines()
    history = [dict(zip(lines[0].split(","), row.split(","))) for row in lines[1:]]
    config = best["config"]
    made = run / "commands.txt"  # where present: the commands that made the run (a resumed run has several)
    commands = [*(made.read_text().splitlines() if made.is_file() else
                  [f"medseg train configs/clicks_2d.yaml --run-dir {run}"]), f"python benchmarks/shipped.py --ship {run}"]
    provenance = {
        "what": "LiteMedSAM's prompt encoder + mask decoder, trained by medseg to answer clicks as well as boxes "
                "(the image encoder is the published one, frozen); stored as float16, loaded as float32",
        "data": f"the train splits of every task of {config['data']['tasks']} ({', '.join(config['data']['task_names']) or 'all'})"
                f": cached LiteMedSAM embeddings, at most {config['data']['max_objects_per_case']} objects per image; "
                f"val: the first {config['data']['val_limit']} val images of each set with a split; no test image",
        "steps": best["step"], "epoch": best["epoch"], "seed": config["train"]["seed"],
        "command": "; ".join(commands),
        "training": {k: config["train"][k] for k in ("click_rounds", "first_prompt", "multimask", "batch_size",
                                                     "time_budget_s", "steps_per_epoch")},
        "optim": config["optim"], "val_dice": best["best_dice"], "history": history,
        "device": "2-core CPU, float32", "date": best["saved_at"][:10],
        "figures": "written by the full run of python benchmarks/shipped.py",
    }
    path = save_parts_fp16(load_state_dict(run / "best.safetensors"), DECODER_PARTS, CLICK_DECODER, provenance,
                           overwrite=overwrite)
    print(f"{run / 'best.safetensors'} (epoch {best['epoch']}, step {best['step']}, val Dice {best['best_dice']:.4f}) "
          f"-> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def record_figures(result: dict) -> None:
    """Put a full run's figures into the shipped decoder's provenance JSON."""
    import json

    from medseg.models.build import CLICK_DECODER
    from medseg.models.weights import provenance_path

    path = provenance_path(CLICK_DECODER)
    provenance = json.loads(path.read_text())
    provenance["figures"] = {"command": "python benchmarks/shipped.py", "protocol": result["protocol"],
                             "test_dice": {name: entry["results"] for name, entry in result["sets"].items()}}
    path.write_text(json.dumps(provenance, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 cases of 2 sets: a smoke test")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "shipped.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--ship", type=Path, metavar="RUN", help="package RUN's best decoder as the shipped one")
    parser.add_argument("--overwrite", action="store_true", help="with --ship: replace the shipped files")
    args = parser.parse_args(argv)
    if args.ship:
        return ship(args.ship, args.overwrite)
    require_data(args.data)
    set_threads()
    sets, limit = (SETS[:2], 3) if args.quick else (SETS, None)
    start = time.perf_counter()
    result = {"benchmark": "shipped", "quick": args.quick, "threads": 2, "clicks": list(CLICKS),
              "protocol": "box: one box per component (medseg evaluate); clicks: medseg evaluate --prompt clicks "
                          "--first point (deepest-pixel first click, then one click into the largest error)",
              "sets": {name: evaluate_set(name, args.data / name, limit) for name in sets}}
    result["gain"] = gains(result["sets"])
    result["seconds"] = round(time.perf_counter() - start, 1)
    print_table(result)
    print(f"-> {write_json(result, args.json)}")
    if not args.quick:
        record_figures(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
