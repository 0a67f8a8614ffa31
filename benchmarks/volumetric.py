"""3D automatic segmentation side by side (issue #14): every method trained for the same wall-clock budget
on a 3D set's train split on this CPU, scored on its test split by medseg's metrics.

    python benchmarks/volumetric.py [--datasets msd_hippocampus la_heart_mri acdc_cardiac_mri]
        [--methods slicewise unet3d vit3d vit3d_mae nnunet shipped] [--budget 300] [--mae-budget 360]
        [--quick] [--json OUT]
    python benchmarks/volumetric.py --ship RUN --name la-heart-3d   # package a 'volume' run as a shipped model
    python benchmarks/volumetric.py --postprocess la-heart-3d       # its largest-component rule, decided on val
    python benchmarks/volumetric.py --datasets acdc_cardiac_mri --methods shipped \
        --merge benchmarks/results/volumetric.json                  # add rows to an earlier result

Methods (rows), each trained and scored in a fresh process under ``/usr/bin/time -v`` (its peak memory):

* ``slicewise``: LiteMedSAM (published weights) slice by slice from each ground-truth component's 3D box
  (``medseg evaluate --prompt box``; a reference that is given the answer's extent; no training);
* ``unet3d``: the planned MONAI 3D U-Net from scratch (``configs/unet3d_hippocampus.yaml``);
* ``vit3d``: the 3D ViT with a UNETR decoder from scratch (``configs/vit3d_hippocampus.yaml``);
* ``vit3d_mae``: the same ViT, its encoder first pre-trained by Hi-End-MAE (``configs/mae_3d.yaml``, every
  3D train split, ``--mae-budget`` seconds, once for all datasets), then fine-tuned with layer-wise LR
  decay 0.75 for the same budget as the others;
* ``nnunet``: nnU-Net v2 3d_fullres in its own venv (``benchmarks/nnunet_peer.py``; skipped with a note
  when ``.venv-nnunet`` is missing), stopped at the same budget;
* ``shipped``: the 3D model medseg ships for the set (``la-heart-3d``, ``hippocampus-3d``, ``acdc-3d``), as
  it is (trained longer; its JSON says how).

The medseg rows use ``data.augment: true``, the batch of each dataset's plan, and for la_heart_mri the
1.25 mm plan of ``configs/unet3d_la_heart.yaml``; the best epoch by val Dice is scored. Columns: test Dice,
HD95 (mm), NSD (2 mm), mean over volumes then classes, on the input's grid; training steps; inference
seconds per volume (median; sliding window, no mirroring); peak memory (MB). JSON:
``{"datasets": {NAME: {METHOD: {"dice", "hd95", "nsd", "per_class", "infer_s", "peak_mb", "steps", ...}}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO, peak_mb_from_time, require_data, set_threads, timed_train, write_json  # noqa: E402

DATASETS = ["msd_hippocampus", "la_heart_mri", "acdc_cardiac_mri"]
METHODS = ["slicewise", "unet3d", "vit3d", "vit3d_mae", "nnunet", "shipped"]
CONFIGS = {"unet3d": "unet3d_hippocampus.yaml", "vit3d": "vit3d_hippocampus.yaml", "vit3d_mae": "vit3d_hippocampus.yaml"}
SPACING = {"la_heart_mri": [1.25, 1.25, 1.25]}  # as configs/unet3d_la_heart.yaml: a patch holds the atrium
SHIPPED = {"la_heart_mri": "la-heart-3d", "msd_hippocampus": "hippocampus-3d", "acdc_cardiac_mri": "acdc-3d"}
SLICEWISE_VOLUMES = 6  # LiteMedSAM runs ~0.7 s a slice here: 6 evenly spaced test volumes a set
LAYER_DECAY = 0.75


def _round(value: float) -> float | None:
    return round(value, 4) if np.isfinite(value) else None


def scores(result: dict) -> dict:
    """The benchmark's columns from an :func:`medseg.eval.automatic.evaluate_volumes_auto` result."""
    from medseg.eval.automatic import class_summary

    summary = class_summary(result["cases"], list(result["classes"]))
    return {**{k: _round(summary[k]) for k in ("dice", "hd95", "nsd")},
            "per_class": {str(c): {k: _round(v) for k, v in s.items()} for c, s in summary["per_class"].items()},
            "infer_s": round(result["seconds_per_case"], 2), "test_volumes": len({r["stem"] for r in result["cases"]}),
            "errors": len(result["errors"])}


def train_and_score(method: str, root: Path, budget: float, mae_encoder: str | None, quick: bool) -> dict:
    """Train ``method`` on ``root``'s train split for ``budget`` seconds, score its best epoch on test."""
    from medseg.data.datasets import dataset_cases
    from medseg.data.planning import fingerprint, make_plan
    from medseg.eval.automatic import evaluate_volumes_auto
    from medseg.models import build_model
    from medseg.train import load_config

    spacing = SPACING.get(root.name)
    batch = make_plan(fingerprint(dataset_cases(root, "train"), progress=False), target_spacing=spacing).batch_size
    overrides = [f"data.root={root}", "train.progress=false", f"train.batch_size={batch}", "data.augment=true"]
    if spacing:
        overrides.append(f"data.target_spacing=[{','.join(map(str, spacing))}]")
    if method == "vit3d_mae":
        overrides += [f"model.init_encoder={mae_encoder}", f"optim.layer_decay={LAYER_DECAY}"]
    config = load_config(REPO / "configs" / CONFIGS[method], overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = timed_train(config, Path(tmp) / "run", budget)
        model = build_model(config.model.name, checkpoint=run["checkpoint"])
        result = evaluate_volumes_auto(model, root, "test", 4 if quick else None, progress=False)
    return {**scores(result), "steps": run["steps"], "epochs": run["epochs"], "train_s": round(run["seconds"], 1),
            "best_val_dice": run["best_val_dice"], "plan": model.plan.to_dict()}


def slicewise(root: Path, quick: bool) -> dict:
    """LiteMedSAM slice by slice from each ground-truth component's 3D box, on evenly spaced test volumes."""
    import statistics

    from medseg.data.datasets import dataset_cases, evenly_spaced
    from medseg.eval.evaluate import evaluate_case
    from medseg.infer import Predictor
    from medseg.models import build_model

    predictor = Predictor(build_model("litemedsam", pretrained=True, weights="published"), device="cpu")
    rows, seconds = [], []
    for case in evenly_spaced(dataset_cases(root, "test"), 2 if quick else SLICEWISE_VOLUMES):
        start = time.perf_counter()
        rows += evaluate_case(predictor, case, prompt="box")[0]
        seconds.append(time.perf_counter() - start)
    mean = {k: round(float(np.nanmean([r[k] for r in rows])), 4) for k in ("dice", "hd95", "nsd")}
    return {**mean, "infer_s": round(statistics.median(seconds), 2), "test_volumes": len(seconds), "steps": 0,
            "note": "given each ground-truth component's 3D box; mean over box rows (component x class)"}


def shipped(root: Path, quick: bool) -> dict:
    from medseg.eval.automatic import evaluate_volumes_auto
    from medseg.models import build_model

    model = build_model(SHIPPED[root.name], pretrained=True)
    result = evaluate_volumes_auto(model, root, "test", 4 if quick else None, progress=False)
    return {**scores(result), "steps": json.loads(_provenance(SHIPPED[root.name]).read_text())["steps"]}


def _provenance(name: str) -> Path:
    from medseg.models.build import SHIPPED_VOLUMETRIC
    from medseg.models.weights import provenance_path

    return provenance_path(SHIPPED_VOLUMETRIC[name][1])


def pretrain_mae(budget: float, data: Path, work: Path) -> tuple[str, dict]:
    """Hi-End-MAE pre-training of vit3d's encoder on every 3D train split for ``budget`` seconds."""
    import yaml

    from medseg.train import load_config

    tasks = yaml.safe_load((REPO / "configs" / "volumes_3d.yaml").read_text())
    for entry in tasks.values():
        entry["root"] = str(data / Path(entry["root"]).name)
    (work / "volumes_3d.yaml").write_text(yaml.safe_dump(tasks))
    config = load_config(REPO / "configs" / "mae_3d.yaml", [f"data.tasks={work / 'volumes_3d.yaml'}",
                                                           "train.progress=false"])
    run = timed_train(config, work / "mae", budget)
    return str(work / "mae" / "latest.safetensors"), {"steps": run["steps"], "train_s": round(run["seconds"], 1),
                                                      "first_loss": run["first_loss"], "last_loss": run["last_loss"]}


def nnunet(name: str, data: Path, budget: float, quick: bool) -> dict | None:
    """nnU-Net v2's row from benchmarks/nnunet_peer.py (its own venv), or None without that venv."""
    if not (REPO / ".venv-nnunet" / "bin" / "python").is_file():
        print("  nnunet: skipped, no .venv-nnunet (see benchmarks/nnunet_peer.py)", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "nnunet.json"
        command = [sys.executable, str(REPO / "benchmarks" / "nnunet_peer.py"), "--datasets", name, "--data", str(data),
                   "--json", str(out)] + (["--quick"] if quick else ["--budget", str(budget)])
        if subprocess.run(command).returncode != 0:
            print(f"  nnunet on {name}: failed (its message above); row left out", file=sys.stderr)
            return None
        row = json.loads(out.read_text())["datasets"][name]["nnunet"]
    peaks = row.get("peak_mb")
    if isinstance(peaks, dict):  # preprocess / train / predict processes: the training one is the column
        row["peak_mb_by_step"], row["peak_mb"] = peaks, peaks.get("train")
    return row


def run_one(args: argparse.Namespace) -> int:
    """Child process: one (method, dataset) row as JSON on ``args.row_out``."""
    set_threads()
    root = args.data / args.dataset
    if args.method == "slicewise":
        row = slicewise(root, args.quick)
    elif args.method == "shipped":
        row = shipped(root, args.quick)
    else:
        row = train_and_score(args.method, root, args.budget, args.mae_encoder, args.quick)
    args.row_out.write_text(json.dumps(row))
    return 0


def in_fresh_process(args: argparse.Namespace, method: str, dataset: str, mae_encoder: str | None) -> dict:
    """:func:`run_one` in a new process under /usr/bin/time -v: the row plus its peak memory (MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        command = [sys.executable, __file__, "--one", method, "--dataset", dataset, "--data", str(args.data),
                   "--budget", str(args.budget), "--row-out", str(out)] + (["--quick"] if args.quick else [])
        if mae_encoder:
            command += ["--mae-encoder", mae_encoder]
        timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
        proc = subprocess.run(timer + command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        if proc.returncode != 0:
            raise RuntimeError(f"{method} on {dataset} failed:\n{proc.stderr[-3000:]}")
        return {**json.loads(out.read_text()), "peak_mb": peak_mb_from_time(proc.stderr)}


def _f(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def print_row(dataset: str, method: str, row: dict) -> None:
    per = ", ".join(f"{c} {_f(s['dice'])}" for c, s in row.get("per_class", {}).items())
    print(f"{dataset:<18}{method:<11}Dice {_f(row['dice'])}" + (f" ({per})" if per else "")
          + f"  HD95 {_f(row['hd95'], '.2f')} mm  NSD {_f(row['nsd'])}  steps {row.get('steps', 0)}  "
          f"{_f(row['infer_s'], '.2f')} s/volume  peak {_f(row.get('peak_mb'), '.0f')} MB", flush=True)


def ship(run: Path, name: str, overwrite: bool) -> int:
    """Write ``run``'s best checkpoint (a 'volume' run) as shipped model ``name`` with its provenance."""
    from medseg.models.build import SHIPPED_VOLUMETRIC
    from medseg.models.weights import load_state_dict, save_parts_fp16

    if name not in SHIPPED_VOLUMETRIC:
        sys.exit(f"--name {name!r}: not a shipped 3D model name ({', '.join(SHIPPED_VOLUMETRIC)})")
    best = json.loads((run / "best.json").read_text())
    config = best["config"]
    lines = (run / "metrics.csv").read_text().splitlines()
    made = run / "commands.txt"
    provenance = {
        "what": f"{name}: a planned 3D MONAI U-Net ({config['model']['name']}) trained from scratch by medseg, no prompt; "
                "the plan (spacing, normalisation, patch, classes) inside the weights; float16, loaded as float32",
        "data": f"the train split of {Path(config['data']['root']).name} (../shared/data); val: its val split; "
                "no test volume",
        "steps": best["step"], "epoch": best["epoch"], "seed": config["train"]["seed"],
        "command": "; ".join([*(made.read_text().splitlines() if made.is_file() else []),
                              f"python benchmarks/volumetric.py --ship {run} --name {name}"]),
        "config": config, "val_dice": best["best_dice"],
        "history": [dict(zip(lines[0].split(","), row.split(","))) for row in lines[1:]],
        "device": "2-core CPU, " + ("bfloat16 autocast" if config["train"].get("amp") == "bf16" else "float32"),
        "date": best["saved_at"][:10],
        "figures": "test figures: benchmarks/results/volumetric.json, row 'shipped'",
    }
    path = save_parts_fp16(load_state_dict(run / "best.safetensors"), ("",), SHIPPED_VOLUMETRIC[name][1], provenance,
                           overwrite=overwrite)
    print(f"{run / 'best.safetensors'} (epoch {best['epoch']}, step {best['step']}, val Dice {best['best_dice']:.4f}) "
          f"-> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def postprocess(name: str, data: Path) -> int:
    """Decide on the val split which classes of shipped model ``name`` keep only their largest connected
    component (:mod:`medseg.eval.postprocess`), and write the decision into its plan and provenance."""
    import dataclasses

    from medseg.eval.postprocess import decide_keep_largest
    from medseg.models import build_model
    from medseg.models.build import SHIPPED_VOLUMETRIC
    from medseg.models.weights import save_parts_fp16

    dataset = {model: set_name for set_name, model in SHIPPED.items()}.get(name)
    if dataset is None:
        sys.exit(f"--postprocess {name!r}: not a shipped 3D model ({', '.join(SHIPPED.values())})")
    set_threads()
    model = build_model(name, pretrained=True)
    decision = decide_keep_largest(model, data / dataset, "val")
    for class_id, entry in decision["classes"].items():
        print(f"{name} class {class_id}: val Dice {entry['raw']:.4f} raw, {entry['largest']:.4f} largest component "
              f"-> {'keep largest' if entry['keep'] else 'as is'}")
    model.set_plan(dataclasses.replace(model.plan, keep_largest=decision["keep_largest"]))
    path = SHIPPED_VOLUMETRIC[name][1]
    provenance = json.loads(_provenance(name).read_text())
    provenance["postprocess"] = {**decision, "rule": "a class keeps only its largest connected component when that "
                                                     "does not lower its mean val Dice"}
    provenance["command"] += f"; python benchmarks/volumetric.py --postprocess {name}"
    save_parts_fp16(model.state_dict(), ("",), path, provenance, overwrite=True)
    print(f"{path}: keep_largest {decision['keep_largest']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per method and dataset (default 300)")
    parser.add_argument("--mae-budget", type=float, default=360.0, help="MAE pre-training seconds, once (default 360)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="60 s budgets, 4 test volumes: a smoke test")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--merge", type=Path, help="start from this earlier result (same budgets): the rows run now "
                                                   "are added to it or replace its rows of the same set and method")
    parser.add_argument("--ship", type=Path, metavar="RUN", help="package RUN/best.safetensors as --name")
    parser.add_argument("--name", help="with --ship: the shipped model's name (la-heart-3d, hippocampus-3d, acdc-3d)")
    parser.add_argument("--overwrite", action="store_true", help="with --ship: replace the shipped files")
    parser.add_argument("--postprocess", metavar="NAME", help="decide a shipped 3D model's largest-component "
                                                             "post-processing on its set's val split, into its weights")
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--row-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mae-encoder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ship:
        return ship(args.ship, args.name, args.overwrite)
    if args.postprocess:
        return postprocess(args.postprocess, args.data)
    if args.one:
        args.method = args.one
        return run_one(args)
    require_data(args.data)
    if args.quick:
        args.budget, args.mae_budget = 60.0, 60.0
    start = time.time()
    results: dict = {name: {} for name in args.datasets}
    out = args.json or REPO / "benchmarks" / "results" / f"volumetric{'_quick' if args.quick else ''}.json"
    payload = {"budget_s": args.budget, "mae_budget_s": args.mae_budget, "mae_pretraining": None, "quick": args.quick,
               "threads": 2, "seconds": 0, "datasets": results}
    if args.merge is not None:
        earlier = json.loads(args.merge.read_text())
        if (earlier["budget_s"], earlier["quick"]) != (args.budget, args.quick):
            sys.exit(f"--merge {args.merge}: its budget and quick ({earlier['budget_s']}, {earlier['quick']}) differ "
                     f"from this run's ({args.budget}, {args.quick})")
        for name, rows in results.items():
            rows.update(earlier["datasets"].get(name, {}))
        payload.update(mae_pretraining=earlier.get("mae_pretraining"), seconds=earlier.get("seconds", 0),
                       datasets={**earlier["datasets"], **results})
        results = payload["datasets"]

    earlier_seconds = payload["seconds"]

    def save() -> Path:  # after every row: a long run that stops early keeps what it measured
        payload["seconds"] = earlier_seconds + round(time.time() - start)
        return write_json(payload, out)

    mae_encoder, failed = None, []
    with tempfile.TemporaryDirectory() as work:
        if "vit3d_mae" in args.methods:
            set_threads()
            mae_encoder, mae = pretrain_mae(args.mae_budget, args.data, Path(work))
            payload["mae_pretraining"] = mae
            print(f"MAE pre-training: {mae['steps']} steps in {mae['train_s']:.0f} s, loss {mae['first_loss']:.3f} -> "
                  f"{mae['last_loss']:.3f}", flush=True)
        for name in args.datasets:
            for method in args.methods:
                if method == "shipped" and name not in SHIPPED:
                    continue
                if method == "nnunet":
                    row = nnunet(name, args.data, args.budget, args.quick)
                    if row is None:
                        failed += [f"nnunet on {name}"] if (REPO / ".venv-nnunet").is_dir() else []
                        continue
                else:
                    try:
                        row = in_fresh_process(args, method, name, mae_encoder if method == "vit3d_mae" else None)
                    except RuntimeError as exc:  # one failed row is reported; the others still run
                        print(exc, file=sys.stderr)
                        results[name][method] = {"error": str(exc)[-2000:]}
                        failed.append(f"{method} on {name}")
                        save()
                        continue
                results[name][method] = row
                print_row(name, method, row)
                save()
    print(f"wrote {save()}")
    if failed:
        print(f"volumetric: {len(failed)} row(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
