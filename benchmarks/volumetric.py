"""3D automatic segmentation (issue #14, first rows): a planned MONAI 3D U-Net trained from scratch in a
fixed wall-clock budget on a 3D set's train split (best epoch by val Dice; the batch is the plan's, the
rest of ``configs/unet3d_hippocampus.yaml`` as it is), scored on its test split.

    python benchmarks/volumetric.py [--datasets msd_hippocampus la_heart_mri] [--budget 480] [--quick] [--json OUT]

For each dataset: the plan (``medseg data plan``), training steps and seconds, the val curve, and on
every test volume, for every class, Dice, HD95 (mm) and NSD (2 mm) on the input's grid (the prediction
put back by ``restore_label``) and inference seconds per volume (sliding window, no mirroring); run it
under ``/usr/bin/time -v`` for the peak memory. JSON: ``{"datasets": {NAME:
{"unet3d": {"dice", "hd95", "nsd", "per_class", "infer_s", "steps", "train_s", "val_curve", "plan"}}}}``.
The other rows of the issue (the 3D ViT with and without MAE pre-training, nnU-Net v2) are not built yet.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO, set_threads, require_data, timed_train, write_json  # noqa: E402

CONFIG = REPO / "configs" / "unet3d_hippocampus.yaml"


def evaluate(model, root: Path, limit: int | None) -> dict:
    """Test-split Dice / HD95 / NSD per class (mean over volumes, then classes) and seconds per volume."""
    from medseg.data.cases import load_case
    from medseg.data.datasets import dataset_cases, evenly_spaced
    from medseg.eval.metrics import case_metrics
    from medseg.infer.sliding import segment_volume_auto

    per_class: dict[int, list[dict]] = {c: [] for c in model.plan.classes}
    seconds = []
    for case in evenly_spaced(dataset_cases(root, "test"), limit):
        image, label = load_case(case)
        start = time.perf_counter()
        pred = segment_volume_auto(model, image)
        seconds.append(time.perf_counter() - start)
        for c in per_class:
            per_class[c].append(case_metrics(pred == c, label.array == c, spacing=image.meta.spacing))
    summary = {c: {k: float(np.nanmean([m[k] for m in rows])) for k in ("dice", "hd95", "nsd")}
               for c, rows in per_class.items()}
    return {**{k: round(float(np.mean([s[k] for s in summary.values()])), 4) for k in ("dice", "hd95", "nsd")},
            "per_class": {str(c): {k: round(v, 4) for k, v in s.items()} for c, s in summary.items()},
            "infer_s": round(statistics.median(seconds), 2), "test_volumes": len(seconds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["msd_hippocampus", "la_heart_mri"])
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds per dataset (default 480)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="60 s of training, 4 test volumes: a smoke test")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    require_data(args.data)
    set_threads()
    from medseg.data.datasets import dataset_cases
    from medseg.data.planning import fingerprint, make_plan
    from medseg.models import build_model
    from medseg.train import load_config

    budget = 60.0 if args.quick else args.budget
    results = {}
    for name in args.datasets:
        root = args.data / name
        batch = make_plan(fingerprint(dataset_cases(root, "train"), progress=False)).batch_size  # the plan's budget
        config = load_config(CONFIG, [f"data.root={root}", "train.progress=false", f"train.batch_size={batch}"])
        with tempfile.TemporaryDirectory() as tmp:
            run = timed_train(config, Path(tmp) / "run", budget)
            model = build_model("unet3d", checkpoint=run["checkpoint"])
            plan = model.plan
            scores = evaluate(model, root, 4 if args.quick else None)
        results[name] = {"unet3d": {**scores, "steps": run["steps"], "epochs": run["epochs"],
                                    "train_s": round(run.get("seconds", budget), 1),
                                    "best_val_dice": run["best_val_dice"], "plan": plan.to_dict()}}
        per = ", ".join(f"class {c} {s['dice']:.3f}" for c, s in scores["per_class"].items())
        print(f"{name}: 3D U-Net from scratch, {run['steps']} steps in {run.get('seconds', budget):.0f} s -> test Dice "
              f"{scores['dice']:.3f} ({per}), HD95 {scores['hd95']:.2f} mm, NSD {scores['nsd']:.3f}; "
              f"{scores['infer_s']:.2f} s per volume ({scores['test_volumes']} test volumes)")
    out = args.json or REPO / "benchmarks" / "results" / f"volumetric{'_quick' if args.quick else ''}.json"
    print(f"wrote {write_json({'budget_s': budget, 'quick': args.quick, 'datasets': results}, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
