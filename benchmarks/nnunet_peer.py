"""nnU-Net v2 as the peer of medseg's 3D models (issue #14): run as its users run it (its console scripts,
its own plans, 3d_fullres), trained on the same train split for the same wall-clock budget, scored on the
same test split by medseg's own metrics, so its rows sit beside ``benchmarks/volumetric.py``'s.

    python benchmarks/nnunet_peer.py [--datasets msd_hippocampus la_heart_mri acdc_cardiac_mri]
                                     [--budget 480] [--quick] [--json OUT] [--tta]
                                     [--data DIR] [--venv .venv-nnunet] [--work nnunet_work]

Outside CI: nnU-Net is no medseg dependency (it pins torchvision, which medseg's venv must not get). It
lives in a venv of its own, which this script only calls through subprocesses; make it once with

    python3.11 -m venv .venv-nnunet && .venv-nnunet/bin/pip install nnunetv2

For each dataset, everything under the work folder (default ``nnunet_work/``, gitignored;
``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results`` point there):

1. Raw data: the TRAIN split only (medseg's ``dataset_cases(root, "train")``; val and test never reach
   nnU-Net's training) as ``DatasetNNN_<name>`` (NNN: 901 and up, reused by name), images as symbolic
   links ``<case>_0000.nii.gz``; labels linked as they are when their ids are 0..K, else rewritten with
   consecutive ids (e.g. 255 -> 1) and predictions mapped back before scoring. ``dataset.json`` takes the
   class names of ``classes.json``.
2. ``nnUNetv2_plan_and_preprocess -d NNN -c 3d_fullres --verify_dataset_integrity -np 2 -npfp 2`` (the
   default planner, ``nnUNetPlans``: the plain U-Net of nnU-Net's default commands); not in the budget,
   as medseg's own planning is not.
3. ``nnUNetv2_train NNN 3d_fullres all -tr nnUNetTrainerMedsegBudget -device cpu``: fold "all" (every
   train case; the held-out checks are medseg's own splits). The trainer is nnU-Net's default trainer
   with a wall-clock budget: this script writes it at run time to ``<work>/trainers/`` and points nnU-Net's
   ``nnUNet_extTrainer`` there (nothing is written into the venv's site-packages).
4. ``nnUNetv2_predict -f all -chk checkpoint_final.pth -device cpu -npp 0 -nps 0`` on the test images
   (the checkpoint at the end of the budget: nnU-Net's "best" checkpoint on fold "all" is picked by a
   pseudo Dice on training cases). Test-time mirroring is OFF (``--disable_tta``), as in medseg's rows;
   ``--tta`` keeps nnU-Net's default (mirroring on). The JSON says which (``tta``).
5. Every test volume scored exactly as ``volumetric.py`` scores medseg's rows (medseg.eval.automatic's
   ``score_label_maps`` and ``class_summary``): medseg's ``read_label`` reads the label and the prediction
   (nnU-Net writes it on the input's grid; shape and voxel spacing are checked against the label),
   ``case_metrics`` gives Dice, HD95 (mm) and NSD (2 mm) per class in the label's voxel spacing; per
   class the mean over volumes (NaN-skipping), then the mean over classes.

Budget policy (the budget medseg's methods get, ``--budget`` seconds, 60 with ``--quick``): the
clock starts when nnU-Net's ``run_training`` starts (network, data loaders, unpacking included; the
process start-up and the preprocessing are not) and stops once the final checkpoint is written. nnU-Net
defaults are 1000 epochs of 250 iterations, far beyond a CPU budget, so the trainer makes epochs of
about budget/10 s: epoch 1 runs iterations until that time has passed and fixes the iterations per
epoch for the rest (validation iterations a fifth of it, nnU-Net's 250:50 ratio). After every epoch
the epochs that still fit are re-planned from the recent epoch times and the poly learning-rate
schedule is stretched to end there (as medseg's loop re-plans its schedule); training also stops after
the iteration in which the budget runs out, and then saves ``checkpoint_final.pth`` as usual.
nnU-Net's final validation (which on fold "all" predicts every training case) is skipped. ``steps``
counts optimizer steps (batches of the plan's batch size), ``train_s`` the budget clock, ``train_wall_s``
the whole training command.

Threads: ``OMP_NUM_THREADS=2``, torch 2 threads, ``nnUNet_n_proc_DA=1`` (one augmentation worker; an
``nnUNet_n_proc_DA`` already in the environment wins), ``nnUNet_compile=false``, ``nnUNet_def_n_proc=2``.
Inference seconds per volume (``infer_s``): the median over test volumes of the time between nnU-Net's
per-case log lines in its sequential predictor, i.e. one volume's preprocessing, sliding window,
resampling back and file export (the process start and model loading excluded; ``infer_total_s`` is the
whole predict command). Peak memory (``peak_mb``): "Maximum resident set size" of ``/usr/bin/time -v``
around each command, i.e. of its largest single process, not a sum over data-augmentation workers.

Output: one line per dataset and JSON (default ``benchmarks/results/nnunet_peer[_quick].json``):
``{"budget_s", "quick", "datasets": {NAME: {"nnunet": {"dice", "hd95", "nsd", "per_class", "infer_s",
"peak_mb": {"preprocess", "train", "predict"}, "steps", "epochs", "train_s", "test_volumes", "plan", ...}}}}``
(a metric that is NaN, e.g. HD95 of a class never predicted, is written as null).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO, THREADS, peak_mb_from_time, require_data, write_json  # noqa: E402

DATASETS = ("msd_hippocampus", "la_heart_mri", "acdc_cardiac_mri")
CONFIGURATION = "3d_fullres"
FOLD = "all"
PLANS = "nnUNetPlans"
CHECKPOINT = "checkpoint_final.pth"
TRAINER = "nnUNetTrainerMedsegBudget"
FIRST_ID = 901
EPOCHS_PER_BUDGET = 10
CHANNEL = {"msd_hippocampus": "MRI", "la_heart_mri": "MRI", "acdc_cardiac_mri": "MRI"}
"""nnU-Net's channel name per dataset: "CT" gets its CT normalisation, anything else z-scoring."""
VENV_HINT = "python3.11 -m venv {venv} && {venv}/bin/pip install nnunetv2"
CASE_LINE = re.compile(r"^perform_everything_on_device: ")
"""What nnU-Net's sequential predictor prints once per case, after reading and preprocessing it."""

TRAINER_SOURCE = '''\
"""Written by medseg's benchmarks/nnunet_peer.py (found through nnUNet_extTrainer): nnU-Net's default
trainer stopped at a wall-clock budget ($MEDSEG_NNUNET_BUDGET_S seconds); see that script's docstring."""

import json
import os
import statistics
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerMedsegBudget(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = float(os.environ["MEDSEG_NNUNET_BUDGET_S"])
        self.epochs_per_budget = int(os.environ.get("MEDSEG_NNUNET_EPOCHS_PER_BUDGET", "10"))
        torch.set_num_threads(int(os.environ.get("MEDSEG_NNUNET_THREADS", "2")))

    def run_training(self):
        start = time.perf_counter()
        self.on_train_start()
        setup_s = time.perf_counter() - start
        steps, epoch_seconds = 0, []
        epoch_target = self.budget_s / self.epochs_per_budget
        while self.current_epoch < self.num_epochs:
            began = time.perf_counter()
            first = not epoch_seconds
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            while True:
                outputs.append(self.train_step(next(self.dataloader_train)))
                steps += 1
                now = time.perf_counter()
                if now - start >= self.budget_s:
                    break
                if (now - began >= epoch_target) if first else len(outputs) >= self.num_iterations_per_epoch:
                    break
            if first:
                self.num_iterations_per_epoch = len(outputs)
                self.num_val_iterations_per_epoch = max(1, round(len(outputs) / 5))
                self.print_to_log_file(f"medseg budget: {self.budget_s:.0f} s, {len(outputs)} iterations "
                                       f"per epoch, {self.num_val_iterations_per_epoch} validation iterations")
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            epoch_seconds.append(time.perf_counter() - began)
            left = self.budget_s - (time.perf_counter() - start)
            if left <= 0:
                break
            recent = (epoch_seconds[1:] or epoch_seconds)[-3:]
            self.num_epochs = self.current_epoch + max(1, round(left / statistics.mean(recent)))
            self.lr_scheduler.max_steps = self.num_epochs
        self.on_train_end()
        stats = {"steps": steps, "epochs": len(epoch_seconds), "train_s": time.perf_counter() - start,
                 "setup_s": setup_s, "budget_s": self.budget_s,
                 "iterations_per_epoch": self.num_iterations_per_epoch,
                 "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
                 "epoch_seconds": [round(s, 2) for s in epoch_seconds],
                 "last_lr": float(self.optimizer.param_groups[0]["lr"]),
                 "torch_threads": torch.get_num_threads()}
        with open(os.path.join(self.output_folder, "medseg_budget.json"), "w") as f:
            json.dump(stats, f, indent=2)

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation skipped: on fold 'all' it would predict the training cases; "
                               "medseg scores the test split")
'''


class PeerError(Exception):
    """A failure reported as one message (no traceback)."""


def nnunet_env(venv: Path, work: Path, budget: float) -> dict:
    """The environment of every nnU-Net command: its folders, the budget, 2 threads, no compile."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update({
        "nnUNet_raw": str(work / "nnUNet_raw"), "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
        "nnUNet_results": str(work / "nnUNet_results"), "nnUNet_extTrainer": str(work / "trainers"),
        "nnUNet_compile": "false", "nnUNet_def_n_proc": str(THREADS),
        "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS), "OPENBLAS_NUM_THREADS": str(THREADS),
        "MEDSEG_NNUNET_THREADS": str(THREADS), "MEDSEG_NNUNET_BUDGET_S": str(budget),
        "MEDSEG_NNUNET_EPOCHS_PER_BUDGET": str(EPOCHS_PER_BUDGET),
        "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.setdefault("nnUNet_n_proc_DA", "1")
    return env


def run_logged(cmd: list[str], env: dict, log: Path, case_line: re.Pattern | None = None) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``, its output into ``log``; ``{"seconds", "peak_mb",
    "stamps"}`` (stamps: perf_counter times of the lines matching ``case_line``, "end": when it ended)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    report = log.with_suffix(".time")
    report.unlink(missing_ok=True)
    timer = Path("/usr/bin/time")
    full = [str(timer), "-v", "-o", str(report), *cmd] if timer.exists() else cmd
    stamps = []
    start = time.perf_counter()
    with open(log, "w") as out, subprocess.Popen(full, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                 text=True, bufsize=1) as proc:
        for line in proc.stdout:
            out.write(line)
            if case_line is not None and case_line.match(line):
                stamps.append(time.perf_counter())
        code = proc.wait()
    end = time.perf_counter()
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise PeerError(f"{Path(cmd[0]).name} failed (exit {code}); the last lines of {log}:\n{tail}")
    peak = peak_mb_from_time(report.read_text()) if report.exists() else None
    return {"seconds": end - start, "peak_mb": None if peak is None else round(peak), "stamps": stamps, "end": end}


def dataset_id(work: Path, name: str) -> int:
    """The nnU-Net id of ``name`` in the work folder: the one it had before, else the first free from 901."""
    used = {}
    for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        for folder in (work / sub).glob("Dataset[0-9][0-9][0-9]_*"):
            used.setdefault(int(folder.name[7:10]), folder.name[11:])
    for number, known in used.items():
        if known == name:
            return number
    number = FIRST_ID
    while number in used:
        number += 1
    if number > 999:
        raise PeerError(f"no free nnU-Net dataset id in {work} (901..999 taken); clear that folder")
    return number


def file_ending(path: Path) -> str:
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix


def write_raw(root: Path, name: str, raw: Path) -> dict:
    """The train split of ``root`` in nnU-Net's raw layout at ``raw``; returns {"labels": original ids
    in nnU-Net's order (index = nnU-Net id), "remapped": bool, "train_cases": n, "file_ending"}."""
    from medseg.data.datasets import class_names, dataset_cases
    from medseg.io import read_label

    cases = dataset_cases(root, "train")
    ending = file_ending(cases[0].image_path)
    for case in cases:
        for p in (*case.image_paths, case.mask_path):
            if file_ending(p) != ending:
                raise PeerError(f"{p}: nnU-Net needs one file type per dataset ({ending}); convert it")
    values: set[int] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # header notes; medseg's scoring path shows them
        for case in cases:
            values.update(int(v) for v in np.unique(read_label(case.mask_path).array))
    ids = sorted(values | {0})
    if ids[0] < 0:
        raise PeerError(f"{root}: negative label ids {ids}; nnU-Net takes 0..K")
    remapped = ids != list(range(len(ids)))
    if remapped and ending not in (".nii", ".nii.gz"):
        raise PeerError(f"{root}: label ids {ids} are not 0..K and only NIfTI labels are rewritten here")

    shutil.rmtree(raw, ignore_errors=True)
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    lut = np.zeros(ids[-1] + 1, dtype=np.uint8)
    lut[ids] = np.arange(len(ids))
    for case in cases:
        for channel, image in enumerate(case.image_paths):
            (raw / "imagesTr" / f"{case.stem}_{channel:04d}{ending}").symlink_to(image.resolve())
        target = raw / "labelsTr" / f"{case.stem}{ending}"
        if remapped:
            import nibabel as nib

            source = nib.load(str(case.mask_path))
            header = source.header.copy()
            header.set_data_dtype(np.uint8)
            header.set_slope_inter(1, 0)
            data = lut[np.asanyarray(source.dataobj).astype(np.int64)]
            nib.save(type(source)(data, source.affine, header), str(target))
        else:
            target.symlink_to(case.mask_path.resolve())

    names = class_names(root)
    labels, seen = {"background": 0}, {"background"}
    for index, original in enumerate(ids[1:], start=1):
        label_name = str(names.get(original, f"class_{original}"))
        if label_name in seen:
            label_name = f"{label_name}_{original}"
        seen.add(label_name)
        labels[label_name] = index
    channels = len(cases[0].image_paths)
    description = (f"train split of {root} ({len(cases)} cases), written by medseg benchmarks/nnunet_peer.py"
                   + (f"; label ids {ids} renumbered 0..{len(ids) - 1}" if remapped else ""))
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): CHANNEL.get(name, "MRI") for c in range(channels)}, "labels": labels,
        "numTraining": len(cases), "file_ending": ending, "name": name, "description": description,
    }, indent=2) + "\n")
    return {"labels": ids, "remapped": remapped, "train_cases": len(cases), "file_ending": ending}


def link_test_images(cases: list, folder: Path, ending: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for case in cases:
        for channel, image in enumerate(case.image_paths):
            (folder / f"{case.stem}_{channel:04d}{ending}").symlink_to(image.resolve())


def read_plan(plans_file: Path) -> dict:
    """The 3d_fullres plan nnU-Net made: patch, batch, spacing, network stages and features."""
    plans = json.loads(plans_file.read_text())
    config = plans["configurations"][CONFIGURATION]
    arch = config.get("architecture", {}).get("arch_kwargs", {})
    return {"patch_size": config["patch_size"], "batch_size": config["batch_size"], "spacing": config["spacing"],
            "median_image_size_in_voxels": config.get("median_image_size_in_voxels"),
            "normalization_schemes": config.get("normalization_schemes"),
            "n_stages": arch.get("n_stages"), "features_per_stage": arch.get("features_per_stage"),
            "network": config.get("architecture", {}).get("network_class_name"),
            "transpose_forward": plans.get("transpose_forward"), "plans_name": plans.get("plans_name"),
            "image_reader_writer": plans.get("image_reader_writer")}


def read_prediction(path: Path, mask_path: Path, lut_back: np.ndarray) -> np.ndarray:
    """nnU-Net's prediction for the case whose label is ``mask_path``, read by medseg, in the original label
    ids; PeerError when it is not on the label's grid (voxel spacing; the shape is checked by the scoring)."""
    from medseg.io import read_label

    if not path.is_file():
        raise PeerError(f"nnU-Net wrote no prediction {path}; see the predict log")
    pred, label = read_label(path), read_label(mask_path)
    if not np.allclose(pred.meta.spacing, label.meta.spacing, rtol=1e-3):
        raise PeerError(f"{path}: spacing {pred.meta.spacing} vs the label's {label.meta.spacing}")
    return lut_back[pred.array.astype(np.int64)]


def evaluate(cases: list, pred_dir: Path, ending: str, classes: list[int], lut_back: np.ndarray) -> dict:
    """Test-split Dice / HD95 / NSD per class (mean over volumes, then classes): medseg's automatic
    protocol (``score_label_maps`` and ``class_summary`` of medseg.eval.automatic, as volumetric.py's rows),
    on nnU-Net's prediction files."""
    from medseg.eval.automatic import class_summary, score_label_maps

    rows, errors = score_label_maps(lambda case: read_prediction(pred_dir / f"{case.stem}{ending}", case.mask_path,
                                                                 lut_back), cases, classes, progress=False)
    if errors:
        raise PeerError(f"{len(errors)} prediction(s) could not be scored, e.g. {errors[0]['error']}")
    summary = class_summary(rows, classes)
    return {**{k: _num(summary[k]) for k in ("dice", "hd95", "nsd")},
            "per_class": {str(c): {k: _num(v) for k, v in s.items()} for c, s in summary["per_class"].items()},
            "test_volumes": len(cases)}


def _num(value: float, digits: int = 4) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def nnunet_version(venv: Path) -> str | None:
    found = sorted(venv.glob("lib/python*/site-packages/nnunetv2-*.dist-info"))
    return found[-1].name.removesuffix(".dist-info").split("-", 1)[1] if found else None


def run_dataset(name: str, args, venv: Path, work: Path, budget: float, limit: int | None) -> dict:
    from medseg.data.datasets import dataset_cases, evenly_spaced

    root = args.data / name
    if not (root / "splits.json").is_file():
        raise PeerError(f"dataset {name!r} not found: no {root}/splits.json (pass --data DIR or set MEDSEG_DATA)")
    number = dataset_id(work, name)
    folder = f"Dataset{number:03d}_{name}"
    env = nnunet_env(venv, work, budget)
    logs = work / "logs" / folder
    for sub in ("nnUNet_preprocessed", "nnUNet_results"):  # a fresh plan and training every run
        shutil.rmtree(work / sub / folder, ignore_errors=True)

    print(f"{name}: {folder}: writing the train split in nnU-Net's layout ...", flush=True)
    raw = write_raw(root, name, work / "nnUNet_raw" / folder)
    print(f"{name}: planning and preprocessing ({raw['train_cases']} train cases) ...", flush=True)
    prep = run_logged([str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(number), "-c", CONFIGURATION,
                       "-np", str(THREADS), "-npfp", str(THREADS), "--verify_dataset_integrity"],
                      env, logs / "plan_and_preprocess.log")
    plan = read_plan(work / "nnUNet_preprocessed" / folder / f"{PLANS}.json")
    print(f"{name}: training {CONFIGURATION} fold {FOLD} for {budget:.0f} s (patch {plan['patch_size']}, "
          f"batch {plan['batch_size']}) ...", flush=True)
    train = run_logged([str(venv / "bin" / "nnUNetv2_train"), str(number), CONFIGURATION, FOLD, "-tr", TRAINER,
                        "-device", "cpu"], env, logs / "train.log")
    fold_dir = work / "nnUNet_results" / folder / f"{TRAINER}__{PLANS}__{CONFIGURATION}" / f"fold_{FOLD}"
    stats_file = fold_dir / "medseg_budget.json"
    if not stats_file.is_file() or not (fold_dir / CHECKPOINT).is_file():
        raise PeerError(f"training left no {CHECKPOINT} / medseg_budget.json in {fold_dir}; see {logs / 'train.log'}")
    stats = json.loads(stats_file.read_text())

    cases = evenly_spaced(dataset_cases(root, "test"), limit)
    inputs, preds = work / "test_inputs" / folder, work / "predictions" / folder
    link_test_images(cases, inputs, raw["file_ending"])
    shutil.rmtree(preds, ignore_errors=True)
    print(f"{name}: predicting {len(cases)} test volumes ...", flush=True)
    predict = run_logged([str(venv / "bin" / "nnUNetv2_predict"), "-i", str(inputs), "-o", str(preds),
                          "-d", str(number), "-c", CONFIGURATION, "-f", FOLD, "-tr", TRAINER, "-p", PLANS,
                          "-chk", CHECKPOINT, "-device", "cpu", "-npp", "0", "-nps", "0",
                          "--disable_progress_bar", *([] if args.tta else ["--disable_tta"])],
                         env, logs / "predict.log", case_line=CASE_LINE)
    stamps = predict["stamps"]
    if len(stamps) == len(cases):
        per_volume = np.diff([*stamps, predict["end"]])
        infer_s, method = float(np.median(per_volume)), "median per volume, between nnU-Net's per-case log lines"
    else:
        infer_s, method = predict["seconds"] / len(cases), "whole predict command / volumes"

    ids = raw["labels"]
    lut_back = np.asarray(ids, dtype=np.int64)
    scores = evaluate(cases, preds, raw["file_ending"], ids[1:], lut_back)
    return {**{k: scores[k] for k in ("dice", "hd95", "nsd", "per_class")},
            "infer_s": round(infer_s, 2), "infer_s_method": method, "infer_total_s": round(predict["seconds"], 1),
            "peak_mb": {"preprocess": prep["peak_mb"], "train": train["peak_mb"], "predict": predict["peak_mb"]},
            "steps": stats["steps"], "epochs": stats["epochs"], "train_s": round(stats["train_s"], 1),
            "train_setup_s": round(stats["setup_s"], 1), "train_wall_s": round(train["seconds"], 1),
            "iterations_per_epoch": stats["iterations_per_epoch"],
            "val_iterations_per_epoch": stats["val_iterations_per_epoch"], "epoch_seconds": stats["epoch_seconds"],
            "preprocess_s": round(prep["seconds"], 1), "test_volumes": scores["test_volumes"],
            "train_cases": raw["train_cases"], "labels_renumbered": raw["remapped"],
            "configuration": CONFIGURATION, "fold": FOLD, "trainer": TRAINER, "checkpoint": CHECKPOINT,
            "tta": bool(args.tta), "dataset": folder, "nnunet_version": nnunet_version(venv),
            "n_proc_DA": int(env["nnUNet_n_proc_DA"]), "plan": plan}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds per dataset (default 480)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--venv", type=Path, default=REPO / ".venv-nnunet", help="nnU-Net's own venv")
    parser.add_argument("--work", type=Path, default=REPO / "nnunet_work",
                        help="nnU-Net's raw/preprocessed/results folders (default nnunet_work, gitignored)")
    parser.add_argument("--quick", action="store_true", help="60 s of training, 2 test volumes: a smoke test")
    parser.add_argument("--tta", action="store_true", help="keep nnU-Net's test-time mirroring (default: off)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    venv = args.venv.absolute()
    if not (venv / "bin" / "nnUNetv2_train").is_file():
        sys.exit(f"nnU-Net's venv not found at {venv} (no bin/nnUNetv2_train); create it with\n"
                 f"    {VENV_HINT.format(venv=venv)}\nor pass --venv DIR")
    require_data(args.data)
    work = args.work.absolute()
    (work / "trainers").mkdir(parents=True, exist_ok=True)
    (work / "trainers" / "medseg_budget_trainer.py").write_text(TRAINER_SOURCE)

    from medseg.errors import InputError

    budget = 60.0 if args.quick else args.budget
    results = {}
    try:
        for name in args.datasets:
            row = run_dataset(name, args, venv, work, budget, 2 if args.quick else None)
            results[name] = {"nnunet": row}
            per = ", ".join(f"class {c} {_fmt(s['dice'], '.3f')}" for c, s in row["per_class"].items())
            peak = row["peak_mb"]
            print(f"{name}: nnU-Net v2 {CONFIGURATION} fold {FOLD}, {row['steps']} steps ({row['epochs']} epochs) "
                  f"in {row['train_s']:.0f} s -> test Dice {_fmt(row['dice'], '.3f')} ({per}), "
                  f"HD95 {_fmt(row['hd95'], '.2f')} mm, NSD {_fmt(row['nsd'], '.3f')}; {row['infer_s']:.2f} s per "
                  f"volume ({row['test_volumes']} test volumes, TTA {'on' if row['tta'] else 'off'}); peak "
                  f"{_fmt(peak['train'], '.0f')} MB training, {_fmt(peak['predict'], '.0f')} MB predicting",
                  flush=True)
    except (PeerError, InputError) as error:
        sys.exit(f"nnunet_peer: {error}")
    out = args.json or REPO / "benchmarks" / "results" / f"nnunet_peer{'_quick' if args.quick else ''}.json"
    print(f"wrote {write_json({'budget_s': budget, 'quick': args.quick, 'datasets': results}, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
