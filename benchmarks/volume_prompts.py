"""Clicks in a volume side by side (issue #15): the promptable 3D model against LiteMedSAM slice by slice,
under one protocol, on the test splits of the 3D sets, on this CPU.

    python benchmarks/volume_prompts.py [--datasets la_heart_mri msd_hippocampus acdc_cardiac_mri]
        [--limit N] [--rounds 5] [--checkpoint W] [--engine openvino --precision bf16] [--quick] [--json OUT]
        [--merge]                                      # add rows to an earlier --json result
        [--split val]                                  # the same on the val splits, to decide a default
        --datasets totalseg_example_3d --split all --limit 1 --modality CT --json OUT   # CT, never trained on
    python benchmarks/volume_prompts.py --ship RUN    # package a 'volume_prompts' run as litemedsam-3d's head

Rows per dataset:

* ``slicewise``: LiteMedSAM (its shipped click-trained decoder) slice by slice
  (:class:`medseg.infer.volume_prompts.SliceWisePredictor`): the first click's slice from its clicks, then
  the mask walks outwards, each next slice prompted with the box of the previous slice's mask plus its own
  clicks; from a 3D box: the middle slice from the box, then the same walk within the box's slices;
* ``litemedsam-3d``: the promptable 3D model (the shipped head, or ``--checkpoint``): the frozen LiteMedSAM
  encoder embeds each slice (every other one where slices are thin, as ``VolumePredictor`` does by
  default; ``litemedsam-3d-every-slice``: all of them), the 3D head answers clicks and boxes in voxel
  coordinates (a 3D box bounds its answer; ``litemedsam-3d-unbounded-box``: the head's answer as it is);
* ``automatic_3d``: the shipped automatic 3D model of the set (no prompt), its test Dice as
  ``benchmarks/results/volumetric.json`` measured it (a reference; not re-run here).

Protocol (:mod:`medseg.eval.interactive3d`, as ``medseg evaluate DS --prompt clicks``): per test volume and
class, a first click at the class's deepest voxel then one click each round into the largest 3D error region
(``--rounds``, previous logits as the mask prompt): Dice after 1, 3 and 5 clicks, the area under the
rounds curve, the final NSD (2 mm); and, separately, a 3D box alone (its Dice and NSD). Both paths encode
slices with the same engine (``--engine``/``--precision``; default OpenVINO bf16, the fastest here), two
threads. Seconds: the first encoding of a volume (3D model: the encoded slices + the 3D adapter; median over
volumes) and per click (the median of every prompt's answer); for the slice-wise path, which encodes a slice
when the walk first reaches it, the median seconds of a first round and of a later round.
JSON: ``{"datasets": {NAME: {METHOD: {"dice_1", "dice_3", "dice_5", "auc", "nsd", "box_dice", "box_nsd",
"encode_s", "click_s", ...}}}, "trainable": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO, require_data, set_threads, write_json  # noqa: E402

DATASETS = ["la_heart_mri", "msd_hippocampus", "acdc_cardiac_mri"]
AUTOMATIC = {"la_heart_mri": "la-heart-3d", "msd_hippocampus": "hippocampus-3d", "acdc_cardiac_mri": "acdc-3d"}


class Timed:
    """A volume predictor that times ``set_volume`` and ``predict`` and keeps each volume's encoding, so the
    box protocol after the click protocol does not encode the volume again."""

    def __init__(self, predictor) -> None:
        self.predictor, self.encode_s, self.predict_s, self.memo = predictor, [], [], {}

    def set_volume(self, volume, spacing_zyx, modality=None) -> None:
        from medseg.infer.predictor import array_digest
        from medseg.infer.volume_prompts import SliceWisePredictor

        key = array_digest(volume)
        p = self.predictor
        if isinstance(p, SliceWisePredictor):
            p.set_volume(volume, spacing_zyx, modality)
            p.encodings = self.memo.setdefault(key, {})  # filled by the walk, kept for the next protocol
            return
        start = time.perf_counter()
        if key not in self.memo:
            self.memo[key] = p.encode(volume, spacing_zyx, modality).half()
        p.set_volume(volume, spacing_zyx, modality, embeddings=self.memo[key].float())
        if len(self.encode_s) < len(self.memo):  # the first encoding of this volume
            self.encode_s.append(time.perf_counter() - start)

    def predict(self, **kwargs):
        start = time.perf_counter()
        out = self.predictor.predict(**kwargs)
        self.predict_s.append(time.perf_counter() - start)
        return out


def run_method(predictor, root: Path, rounds: int, limit: int | None, split: str = "test",
               modality: str | None = None) -> dict:
    from medseg.data.cases import modality_loader
    from medseg.eval.interactive import evaluate_interactive

    timed = Timed(predictor)
    loader = modality_loader(modality)
    clicks = evaluate_interactive(timed, root, split, rounds=rounds, limit=limit, progress=True, first="point",
                                  loader=loader)
    per_round = clicks["dice_per_round"]
    click_times = list(timed.predict_s)
    box = evaluate_interactive(timed, root, split, rounds=1, limit=limit, progress=True, first="box", loader=loader)
    errors = clicks["errors"] + box["errors"]
    if errors:
        raise SystemExit(f"{root.name}: {len(errors)} volumes failed: {errors[:3]}")
    row = {"volumes": len({c["stem"] for c in clicks["cases"]}), "rows": len(clicks["cases"]), "limit": limit,
           **{f"dice_{k}": round(per_round[k - 1], 4) for k in (1, 3, 5) if k <= rounds},
           "dice_per_round": [round(v, 4) for v in per_round], "auc": round(clicks["auc"], 4),
           "nsd": round(clicks["nsd"], 4), "box_dice": round(box["dice_per_round"][0], 4),
           "box_nsd": round(box["nsd"], 4),
           "per_class": _per_class(clicks["cases"], rounds)}
    if timed.encode_s:
        row.update(encode_s=round(statistics.median(timed.encode_s), 2), click_s=round(statistics.median(click_times), 3))
    else:  # slice by slice: the first round encodes the slices the walk reaches
        first = click_times[::rounds]
        later = [t for i, t in enumerate(click_times) if i % rounds]
        row.update(first_round_s=round(statistics.median(first), 2),
                   click_s=round(statistics.median(later), 3) if later else None)
    return row


def _per_class(rows: list[dict], rounds: int) -> dict:
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["class_name"], []).append(r["dice_per_round"][min(rounds, 5) - 1])
    return {name: round(statistics.mean(v), 4) for name, v in out.items()}


def automatic_reference(dataset: str) -> dict | None:
    path = REPO / "benchmarks" / "results" / "volumetric.json"
    if not path.exists():
        return None
    row = json.loads(path.read_text())["datasets"].get(dataset, {}).get("shipped")
    return None if row is None else {"model": AUTOMATIC[dataset], "dice": row["dice"], "nsd": row.get("nsd"),
                                     "source": "benchmarks/results/volumetric.json"}


def ship(run: Path, overwrite: bool) -> int:
    """Write ``run``'s best checkpoint's 3D head as litemedsam-3d's shipped head, with its provenance."""
    from medseg.models.build import PROMPTABLE_3D
    from medseg.models.weights import load_state_dict, save_parts_fp16

    best = json.loads((run / "best.json").read_text())
    config = best["config"]
    lines = (run / "metrics.csv").read_text().splitlines()
    made = run / "commands.txt"
    earlier = _earlier(config)
    provenance = {
        "what": "litemedsam-3d's head: a promptable 3D head (medseg.models.prompt3d: spatial adapter, 3D prompt "
                "encoder, 3D mask decoder) on LiteMedSAM's frozen encoder, trained by medseg from simulated clicks "
                "and 3D boxes on cached slice embeddings; float16, loaded as float32",
        "data": f"the train splits of {', '.join(config['data']['task_names'])} (../shared/data, "
                f"{config['data']['tasks']}"
                + (f", the first {config['data']['limit']} volumes of each" if config["data"].get("limit") else "")
                + "); val: their val splits; no test volume"
                + (f"; continued from a head trained {earlier['steps']} steps on {earlier['data']}" if earlier else ""),
        "modalities": _modalities(config, earlier),
        "steps": best["step"] + (earlier["steps"] if earlier else 0), "epoch": best["epoch"],
        "seed": config["train"]["seed"],
        "command": "; ".join([*([earlier["command"]] if earlier and earlier.get("command") else []),
                              *(made.read_text().splitlines() if made.is_file() else []),
                              f"python benchmarks/volume_prompts.py --ship {run}"]),
        "config": config, "val_dice": best["best_dice"],
        "history": [dict(zip(lines[0].split(","), row.split(","))) for row in lines[1:]],
        "device": f"2-core CPU, float32; slice embeddings from {config['train']['encoder_engine']} "
                  f"{config['train']['encoder_precision']}",
        "date": best["saved_at"][:10],
        "figures": "test figures: benchmarks/results/volume_prompts.json",
    }
    path = save_parts_fp16(load_state_dict(run / "best.safetensors"), ("volume_head.",),
                           PROMPTABLE_3D["litemedsam-3d"][1], provenance, overwrite=overwrite)
    print(f"{run / 'best.safetensors'} (epoch {best['epoch']}, step {best['step']}, val Dice {best['best_dice']:.4f}) "
          f"-> {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def _modalities(config: dict, earlier: dict | None) -> list[str]:
    """The modalities of the volumes a head trained on (its tasks file's, and those of the head it continued
    from): ``VolumePredictor`` warns on a volume of another."""
    import yaml

    tasks = yaml.safe_load((REPO / config["data"]["tasks"]).read_text())
    found = {str(tasks[name]["modality"]).upper() for name in config["data"]["task_names"]}
    return sorted(found | set((earlier or {}).get("modalities", [])))


def _earlier(config: dict) -> dict | None:
    """What a fine-tuning run started from: ``model.checkpoint``'s best.json (its steps), or with
    ``model.weights: shipped`` the shipped head's provenance (its steps, data and commands); else None."""
    from medseg.models.build import PROMPTABLE_3D
    from medseg.models.weights import read_provenance

    start = config["model"].get("checkpoint")
    if start:
        best = Path(start).with_name("best.json")
        return {"steps": json.loads(best.read_text())["step"], "data": "the same data"} if best.is_file() else None
    if config["model"].get("weights") == "shipped" and config["model"].get("pretrained", True):
        shipped = read_provenance(PROMPTABLE_3D["litemedsam-3d"][1])
        return {"steps": shipped["steps"], "data": shipped["data"], "command": shipped["command"],
                "modalities": shipped.get("modalities", [])}
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--limit", type=int, help="the first N test volumes of each set")
    parser.add_argument("--split", default="test", choices=["test", "val", "all"],
                        help="val: for deciding a default (never on test); all: a set with no splits (e.g. "
                             "totalseg_example_3d, a modality the head never saw); each written to its own JSON")
    parser.add_argument("--modality", help="CT or MR for every volume (NIfTI carries none; CT needs its window)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--checkpoint", type=Path, help="a volume_prompts run's weights instead of the shipped head")
    parser.add_argument("--engine", default="openvino")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--methods", nargs="+", default=["slicewise", "litemedsam-3d"],
                        choices=["slicewise", "litemedsam-3d", "litemedsam-3d-every-slice",
                                 "litemedsam-3d-unbounded-box"])
    parser.add_argument("--quick", action="store_true", help="smoke test: one volume of la_heart_mri, 2 rounds")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/volume_prompts.json "
                                                  "(volume_prompts_SPLIT.json for another --split)")
    parser.add_argument("--merge", action="store_true",
                        help="add these rows (per dataset and method) to the --json file instead of starting a new one")
    parser.add_argument("--ship", type=Path, metavar="RUN", help="package RUN's best head as the shipped one")
    parser.add_argument("--overwrite", action="store_true", help="with --ship: replace the shipped head")
    args = parser.parse_args()
    if args.ship:
        return ship(args.ship, args.overwrite)
    if args.json is None:
        suffix = "" if args.split == "test" else f"_{args.split}"
        args.json = REPO / "benchmarks" / "results" / f"volume_prompts{suffix}.json"
    require_data(args.data)
    set_threads()
    from medseg.infer import Predictor
    from medseg.infer.volume_prompts import SliceWisePredictor, VolumePredictor
    from medseg.models import build_model
    from medseg.models.prompt3d import parameter_count

    if args.quick:
        args.datasets, args.limit, args.rounds = args.datasets[:1], 1, 2
    model = build_model("litemedsam-3d", pretrained=args.checkpoint is None, checkpoint=args.checkpoint)
    predictors = {"slicewise": lambda: SliceWisePredictor(Predictor(build_model("litemedsam", pretrained=True),
                                                                    engine=args.engine, precision=args.precision)),
                  "litemedsam-3d": lambda: VolumePredictor(model, engine=args.engine, precision=args.precision),
                  "litemedsam-3d-every-slice": lambda: VolumePredictor(
                      model, engine=args.engine, precision=args.precision, every_slice=True),
                  "litemedsam-3d-unbounded-box": lambda: VolumePredictor(
                      model, engine=args.engine, precision=args.precision, box_bounds=False)}
    start = time.perf_counter()
    result = {"quick": args.quick, "split": args.split, "modality": args.modality, "rounds": args.rounds,
              "limit": args.limit, "engine": args.engine, "precision": args.precision, "threads": 2,
              "weights": str(args.checkpoint or "shipped"),
              "trainable": {"litemedsam-3d": parameter_count(model.volume_head), "total": parameter_count(model),
                            "fraction": round(model.head_fraction(), 4)},
              "datasets": {}}
    for name in args.datasets:
        rows = result["datasets"][name] = {}
        for method in args.methods:
            print(f"== {name}: {method}", flush=True)
            rows[method] = run_method(predictors[method](), args.data / name, args.rounds, args.limit, args.split,
                                      args.modality)
            print(json.dumps(rows[method]), flush=True)
        if args.split == "test":  # the automatic models' test figures
            rows["automatic_3d"] = automatic_reference(name)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if args.merge and args.json.exists():
        earlier = json.loads(args.json.read_text())
        for name, rows in result["datasets"].items():  # method by method: rows not re-run are kept
            earlier["datasets"].setdefault(name, {}).update(rows)
        earlier.setdefault("runs", []).append({k: v for k, v in result.items() if k != "datasets"}
                                              | {"datasets": list(result["datasets"])})
        result = earlier
    print_table(result)
    print(f"wrote {write_json(result, args.json)}")
    return 0


def print_table(result: dict) -> None:
    print(f"\n{'dataset':<18}{'method':<27}{'1 click':>8}{'3 clicks':>9}{'5 clicks':>9}{'AUC':>7}{'NSD':>7}"
          f"{'3D box':>8}{'encode s':>9}{'click s':>8}")
    for name, rows in result["datasets"].items():
        for method, r in rows.items():
            if r is None:
                continue
            if method == "automatic_3d":
                print(f"{name:<18}{r['model'] + ' (auto)':<27}{'':>8}{'':>9}{'':>9}{'':>7}{r['nsd'] or 0:7.3f}"
                      f"{r['dice']:8.3f}  (no prompt; Dice in the box column)")
                continue
            cells = [r.get(k) for k in ("dice_1", "dice_3", "dice_5", "auc", "nsd", "box_dice")]
            enc = r.get("encode_s", r.get("first_round_s"))
            print(f"{name:<18}{method:<27}" + "".join(f"{v:8.3f} " if v is not None else f"{'-':>8} " for v in cells)
                  + f"{enc:8.2f} {r['click_s'] or 0:7.3f}")
    t = result["trainable"]
    print(f"litemedsam-3d trains {t['litemedsam-3d']:,} of {t['total']:,} parameters ({100 * t['fraction']:.1f}%)")


if __name__ == "__main__":
    raise SystemExit(main())
