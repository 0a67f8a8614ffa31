"""Evaluation of automatic (prompt-free) segmentation: ``medseg evaluate DATASET --auto --task NAME``.

Each case's image is segmented with no prompt (:class:`medseg.infer.automatic.AutoSegmenter`); the
label map, at the image's own resolution, is scored per class of the task against the ground truth
(``label == class id``) with :func:`medseg.eval.metrics.case_metrics` (Dice, IoU, HD95, NSD; Dice 1
when a class is absent from both). Cases with empty masks stay in: finding nothing there is right.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medseg.eval.datasets import find_cases
from medseg.eval.loader import io_loader, slice_hwc
from medseg.eval.metrics import case_metrics
from medseg.errors import InputError


def evaluate_auto(segmenter, dataset_dir: str | Path, task: str, split: str = "test", limit: int | None = None,
                  progress: bool = True) -> dict:
    """Score ``segmenter`` (an AutoSegmenter) on ``split`` of a dataset as task ``task``.

    Returns ``{"dataset", "split", "task", "classes", "cases": [{"stem", "class_id", "dice", "iou",
    "hd95", "nsd"}], "per_class": {id: mean Dice}, "mean_dice", "errors": [...]}``; mean Dice is over
    cases and classes. Unreadable cases are listed in ``errors`` (and skipped), never scored as 0.
    """
    info = segmenter.model.automatic.task(task)  # an unknown task fails before any case is read
    cases = find_cases(dataset_dir, split)[:limit] if limit else find_cases(dataset_dir, split)
    rows, errors = [], []
    for case in tqdm(cases, desc=f"auto {task}", unit="case", disable=not progress, dynamic_ncols=True):
        try:
            image, label = io_loader(case.image_path, case.mask_path)
            if image.array.shape[1] != 1:
                raise InputError(f"{case.image_path}: a volume; automatic evaluation takes 2D images")
            result = segmenter.segment(slice_hwc(image), task)
        except InputError as exc:
            errors.append({"stem": case.stem, "error": str(exc)})
            continue
        truth = label.array[0]
        for cid in info.classes:
            rows.append({"stem": case.stem, "class_id": cid, **case_metrics(result.labels == cid, truth == cid)})
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


def write_auto_json(result: dict, path: str | Path, overwrite: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; choose another --json path or remove it")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**result, "classes": {str(k): v for k, v in result["classes"].items()},
            "per_class": {str(k): v for k, v in result["per_class"].items()}}
    path.write_text(json.dumps(data, indent=2, default=float))
    return path
