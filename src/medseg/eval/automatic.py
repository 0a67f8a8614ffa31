"""Evaluation of automatic (prompt-free) segmentation: ``medseg evaluate DATASET --auto --task NAME``.

Each case's image is segmented with no prompt (:class:`medseg.infer.automatic.AutoSegmenter`); the
label map, at the image's own resolution, is scored per class of the task against the ground truth
(``label == class id``) with :func:`medseg.eval.metrics.case_metrics` (Dice, IoU, HD95, NSD; Dice 1
when a class is absent from both). Cases with empty masks stay in: finding nothing there is right.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medseg.data.cases import Case, load_case, plane_2d
from medseg.data.datasets import evaluation_cases
from medseg.eval.metrics import case_metrics
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
            truth = binary_as_class_one(read_label(case.mask_path).array[0], class_ids)
        except InputError as exc:
            errors.append({"stem": case.stem, "error": str(exc)})
            continue
        masks = labels if isinstance(labels, dict) else {cid: labels == cid for cid in class_ids}
        if any(masks[cid].shape != truth.shape for cid in class_ids):
            errors.append({"stem": case.stem, "error": f"{case.mask_path}: the segmentation is not of the mask's "
                                                        f"size {truth.shape}"})
            continue
        rows += [{"stem": case.stem, "class_id": cid, **case_metrics(masks[cid], truth == cid)} for cid in class_ids]
    return rows, errors


def _plane_of(case: Case) -> np.ndarray:
    return plane_2d(load_case(case)[0], "automatic evaluation")


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
    errors += [{"stem": stem, "error": what} for stem, what in missing.items()]
    if not rows:
        raise InputError(f"{dataset_dir}: no case of split {split!r} could be scored ({len(errors)} errors, e.g. "
                         f"{errors[0]['error'] if errors else 'none'})")
    per_class = {cid: float(np.mean([r["dice"] for r in rows if r["class_id"] == cid])) for cid in info.classes}
    return {"dataset": str(dataset_dir), "split": split, "task": task, "classes": dict(info.classes),
            "cases": rows, "per_class": per_class, "mean_dice": float(np.mean([r["dice"] for r in rows])),
            "errors": errors}


def print_auto(result: dict) -> None:
    """A table: per class mean Dice / HD95 / NSD, then the overall mean Dice."""
    print(f"{result['task']} on {result['dataset']} ({result['split']}), automatic, no prompt")
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
