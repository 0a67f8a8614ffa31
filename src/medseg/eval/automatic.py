"""Evaluation of automatic (prompt-free) segmentation: ``medseg evaluate DATASET --auto --task NAME``
(2D, a universal model's task) and ``medseg evaluate DATASET --auto --model la-heart-3d`` (volumes, a
planned 3D model's classes).

Each case's image is segmented with no prompt (:class:`medseg.infer.automatic.AutoSegmenter`, or
:func:`medseg.infer.sliding.segment_volume_auto` for volumes); the label map, at the image's own
resolution, is scored per class against the ground truth (``label == class id``) with
:func:`medseg.eval.metrics.case_metrics` (Dice, IoU, HD95, NSD; Dice 1 when a class is absent from both;
distances in pixels for 2D pictures, in mm for volumes). Cases with empty masks stay in: finding
nothing there is right.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from tqdm import tqdm

from medseg.data.cases import Case, load_image, plane_2d
from medseg.data.datasets import evaluation_cases
from medseg.eval.metrics import case_metrics
from medseg.eval.report import csv_cell
from medseg.errors import InputError
from medseg.io import read_label


def binary_as_class_one(truth: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """A 0/255 binary mask as class 1 when the classes scored do not name 255; others as they are."""
    if 255 in class_ids or not set(np.unique(truth).tolist()) <= {0, 255}:
        return truth
    return (truth == 255).astype(truth.dtype)


def score_label_maps(segment: Callable[[Case], np.ndarray | dict[int, np.ndarray]], cases: list[Case],
                     class_ids: list[int], progress: bool = True,
                     desc: str = "automatic") -> tuple[list[dict], list[dict]]:
    """The automatic protocol: ``segment(case)`` -> an (H, W) label map at the image's resolution (or
    ``{class id: bool (H, W) mask}`` when classes may overlap), scored per class id against
    ``truth == id`` (a 0/255 mask counts as class 1 unless 255 is a class id) with
    :func:`medseg.eval.metrics.case_metrics`; classes absent from both score Dice 1.

    Returns ``(rows, errors)``: rows ``{"stem", "class_id", "dice", "iou", "hd95", "nsd"}``, errors
    ``{"stem", "error"}`` of cases that could not be read or segmented (never scored as 0)."""
    rows, errors = [], []
    for case in tqdm(cases, desc=desc, unit="case", disable=not progress, dynamic_ncols=True):
        try:
            labels = segment(case)
            label = read_label(case.mask_path)
            volume = label.array.shape[0] > 1
            truth = binary_as_class_one(label.array if volume else label.array[0], class_ids)
            spacing = label.meta.spacing if volume else None
        except InputError as exc:
            errors.append({"stem": case.stem, "error": str(exc)})
            continue
        masks = labels if isinstance(labels, dict) else {cid: labels == cid for cid in class_ids}
        if any(masks[cid].shape != truth.shape for cid in class_ids):
            errors.append({"stem": case.stem, "error": f"{case.mask_path}: the segmentation is not of the mask's "
                                                        f"size {truth.shape}"})
            continue
        rows += [{"stem": case.stem, "class_id": cid, **case_metrics(masks[cid], truth == cid, spacing=spacing)}
                 for cid in class_ids]
    return rows, errors


def class_summary(rows: list[dict], class_ids) -> dict:
    """Rows of :func:`score_label_maps` -> ``{"dice", "hd95", "nsd", "per_class": {id: {...}}}``: per class the
    mean over cases (HD95 skipping NaN, a class missed or absent), then the mean over classes; a metric that
    is NaN for every case stays NaN."""
    import warnings

    per_class = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN
        for cid in class_ids:
            mine = [r for r in rows if r["class_id"] == cid]
            per_class[cid] = {k: float(np.nanmean([r[k] for r in mine])) if mine else float("nan")
                              for k in ("dice", "hd95", "nsd")}
        means = {k: float(np.nanmean([c[k] for c in per_class.values()])) for k in ("dice", "hd95", "nsd")}
    return {**means, "per_class": per_class}


def _plane_of(case: Case) -> np.ndarray:
    return plane_2d(load_image(case), "automatic evaluation")


def _auto_result(dataset_dir, split: str, task: str, classes: dict[int, str], rows: list[dict], errors: list[dict],
                 missing: dict[str, str]) -> dict:
    """The result dict of an automatic evaluation (see :func:`evaluate_auto`); InputError when nothing scored."""
    errors = errors + [{"stem": stem, "error": what} for stem, what in missing.items()]
    if not rows:
        raise InputError(f"{dataset_dir}: no case of split {split!r} could be scored ({len(errors)} errors, e.g. "
                         f"{errors[0]['error'] if errors else 'none'})")
    per_class = {cid: float(np.mean([r["dice"] for r in rows if r["class_id"] == cid])) for cid in classes}
    return {"dataset": str(dataset_dir), "split": split, "task": task, "classes": dict(classes), "cases": rows,
            "per_class": per_class, "mean_dice": float(np.mean([r["dice"] for r in rows])), "errors": errors}


def evaluate_auto(segmenter, dataset_dir: str | Path, task: str, split: str = "test", limit: int | None = None,
                  progress: bool = True) -> dict:
    """Score ``segmenter`` (an AutoSegmenter) on ``split`` of a dataset as task ``task``.

    Returns ``{"dataset", "split", "task", "classes", "cases": [{"stem", "class_id", "dice", "iou",
    "hd95", "nsd"}], "per_class": {id: mean Dice}, "mean_dice", "errors": [...]}``; mean Dice is over
    cases and classes. Unreadable cases are listed in ``errors`` (and skipped), never scored as 0.
    """
    info = segmenter.universal.automatic.task(task)  # an unknown task fails before any case is read
    cases, missing = evaluation_cases(dataset_dir, split, limit)
    rows, errors = score_label_maps(lambda case: segmenter.segment(_plane_of(case), task).labels, cases,
                                    list(info.classes), progress, desc=f"auto {task}")
    return _auto_result(dataset_dir, split, task, info.classes, rows, errors, missing)


def evaluate_volumes_auto(model, dataset_dir: str | Path, split: str = "test", limit: int | None = None,
                          progress: bool = True, mirror: bool = False, name: str | None = None) -> dict:
    """Score a planned 3D model (sliding window, no prompt) on ``split`` of a 3D dataset, per class of its
    plan (names from the dataset's class file); HD95 and NSD in mm on each volume's own grid.

    Returns :func:`evaluate_auto`'s dict (``task`` = ``name``, the model's) plus ``"seconds_per_case"``,
    the median seconds of one volume's segmentation (reading and scoring left out)."""
    import statistics
    import time

    from medseg.data.datasets import class_names
    from medseg.infer.sliding import segment_volume_auto

    plan = getattr(model, "plan", None)
    if plan is None:
        raise InputError("this model carries no 3D plan: give a shipped 3D model (`medseg models`) or the "
                         "--checkpoint of a 'volume' run")
    names = class_names(dataset_dir)
    classes = {cid: names.get(cid, f"class_{cid}") for cid in plan.classes}
    cases, missing = evaluation_cases(dataset_dir, split, limit)
    seconds: list[float] = []

    def segment(case: Case) -> np.ndarray:
        image = load_image(case)
        if image.array.shape[1] == 1:
            raise InputError(f"{case.image_path}: a 2D picture; a 3D model segments volumes")
        start = time.perf_counter()
        labels = segment_volume_auto(model, image, mirror=mirror)
        seconds.append(time.perf_counter() - start)
        return labels

    rows, errors = score_label_maps(segment, cases, list(classes), progress, desc=f"auto {name or '3D'}")
    result = _auto_result(dataset_dir, split, name or "3D model", classes, rows, errors, missing)
    return {**result, "seconds_per_case": statistics.median(seconds) if seconds else None}


def print_auto(result: dict) -> None:
    """A table: per class mean Dice / HD95 / NSD, then the overall mean Dice."""
    print(f"{result['task']} on {result['dataset']} ({result['split']}), automatic, no prompt"
          + (f"; {result['seconds_per_case']:.2f} s per volume" if result.get("seconds_per_case") else ""))
    print(f"{'class':<24}{'cases':>6}{'dice':>8}{'hd95':>9}{'nsd':>8}")
    for cid, name in result["classes"].items():
        rows = [r for r in result["cases"] if r["class_id"] == cid]
        hd = [r["hd95"] for r in rows if not math.isnan(r["hd95"])]
        print(f"{f'{cid} {name}':<24}{len(rows):>6}{np.mean([r['dice'] for r in rows]):>8.3f}"
              f"{(np.median(hd) if hd else float('nan')):>9.1f}{np.mean([r['nsd'] for r in rows]):>8.3f}")
    print(f"mean Dice {result['mean_dice']:.4f} over {len(result['cases'])} case-classes"
          + (f"; {len(result['errors'])} case(s) failed" if result["errors"] else ""))
    for error in result["errors"]:
        print(f"  error {error['stem']}: {error['error']}", file=sys.stderr)


def write_auto_json(result: dict, path: str | Path, overwrite: bool = False) -> Path:
    """Write an :func:`evaluate_auto` result as JSON, atomically, by the output policy (never over the
    dataset's own files; an existing file only with ``overwrite``)."""
    from medseg.data.datasets import dataset_files
    from medseg.io.outputs import plan_outputs, write_text

    target = plan_outputs({"--json": path}, protected=dataset_files(result["dataset"]), overwrite=overwrite)["--json"]
    data = {**result, "classes": {str(k): v for k, v in result["classes"].items()},
            "per_class": {str(k): v for k, v in result["per_class"].items()}}
    return write_text(target, json.dumps(data, indent=2, default=float) + "\n")


AUTO_CSV_COLUMNS = ("stem", "class_id", "class_name", "dice", "iou", "hd95", "nsd")


def auto_csv(result: dict) -> str:
    """An automatic evaluation's rows as CSV text: one row per case and class (HD95 empty where undefined,
    cells as ``medseg evaluate --csv`` writes them: :func:`medseg.eval.report.csv_cell`)."""

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(AUTO_CSV_COLUMNS)
    for row in result["cases"]:
        values = {**row, "class_name": result["classes"].get(row["class_id"], "")}
        writer.writerow([csv_cell(values[k]) for k in AUTO_CSV_COLUMNS])
    return out.getvalue()


def save_auto_figure(result: dict, path: Path) -> Path:
    """Write a PNG of an automatic evaluation: Dice of every case and class, sorted (the bar chart of
    ``medseg evaluate --figure``; no overlays). ``path`` was checked by the output policy."""
    from medseg.eval.figure import draw_report  # matplotlib only when a figure is wanted
    from medseg.io.outputs import atomic_write

    cases = [{**row, "class_name": result["classes"].get(row["class_id"], str(row["class_id"])), "empty_gt": False}
             for row in result["cases"]]
    view = SimpleNamespace(cases=cases, dataset=result["dataset"], split=result["split"], prompt="none",
                           summary={"dice": result["mean_dice"], "per_class": result["classes"]})
    return atomic_write(path, lambda tmp: draw_report(view, tmp, []))
