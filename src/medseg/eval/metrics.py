"""Per-case overlap and boundary metrics of a binary prediction against a binary ground truth.

All four numbers come from MONAI (``compute_dice``, ``compute_iou``,
``compute_hausdorff_distance(percentile=95)``, ``compute_surface_dice``) for 2D (H, W) and
3D (Z, Y, X) masks. MONAI leaves the empty cases undefined (NaN, with warnings), so they are
decided here, before MONAI is called:

=====================  ======  =====  =====  ====
case                   dice    iou    hd95   nsd
=====================  ======  =====  =====  ====
both empty             1       1      0      1
exactly one empty      0       0      NaN    0
=====================  ======  =====  =====  ====

A NaN HD95 (no surface to measure from) is written as null in reports and left out of the
HD95 mean, while the case itself still counts.

Distances (HD95, and the NSD tolerance) are in pixels when ``spacing`` is None, otherwise in
the units of ``spacing`` (usually mm), which gives one step per array axis in array order:
(row, column) = (y, x) in 2D, (z, y, x) in 3D.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import (
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
)

from medseg.errors import InputError

NSD_TOLERANCE = 2.0
"""Default NSD tolerance: 2 pixels, or 2 units of ``spacing`` when spacing is given."""

METRIC_NAMES = ("dice", "iou", "hd95", "nsd")


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (pred != 0, gt != 0) after checking they are 2D or 3D masks of one shape."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise InputError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if gt.ndim not in (2, 3):
        raise InputError(f"masks must be 2D (H, W) or 3D (Z, Y, X), got shape {gt.shape}")
    return pred != 0, gt != 0


def _check_spacing(spacing: float | Sequence[float] | None, ndim: int) -> list[float] | None:
    """Spacing as one float per axis (array order), or None for pixel units."""
    if spacing is None:
        return None
    values = [float(spacing)] * ndim if np.isscalar(spacing) else [float(s) for s in spacing]
    if len(values) != ndim or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"spacing must be {ndim} positive numbers (one per axis), got {spacing!r}")
    return values


def _empty_case(pred_any: bool, gt_any: bool) -> dict[str, float] | None:
    """Metrics fixed by the empty-mask rules, or None when both masks have foreground."""
    if not pred_any and not gt_any:
        return {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0}
    if not pred_any or not gt_any:
        return {"dice": 0.0, "iou": 0.0, "hd95": math.nan, "nsd": 0.0}
    return None


def case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: float | Sequence[float] | None = None,
    tolerance: float = NSD_TOLERANCE,
) -> dict[str, float]:
    """Dice, IoU, HD95 and NSD of one binary prediction against one binary ground truth.

    Args:
        pred: (H, W) or (Z, Y, X) array; non-zero = foreground.
        gt: same shape as ``pred``; non-zero = foreground.
        spacing: None (distances in pixels), one number, or one number per axis in array order.
        tolerance: NSD tolerance, in the same units as the distances (pixels or spacing units).

    Returns:
        ``{"dice", "iou", "hd95", "nsd"}`` as Python floats; see the module docstring for the
        empty cases (``hd95`` is NaN when exactly one mask is empty).
    """
    pred, gt = _check_pair(pred, gt)
    steps = _check_spacing(spacing, gt.ndim)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise InputError(f"NSD tolerance must be a non-negative number, got {tolerance!r}")
    fixed = _empty_case(bool(pred.any()), bool(gt.any()))
    if fixed is not None:
        return fixed

    y_pred = torch.from_numpy(pred[None, None].astype(np.float32))  # (B=1, C=1, *spatial)
    y = torch.from_numpy(gt[None, None].astype(np.float32))
    with warnings.catch_warnings():
        # MONAI 1.5+ passes a deprecated argument to itself internally; that is not our problem.
        warnings.simplefilter("ignore", FutureWarning)
        dice = compute_dice(y_pred, y, include_background=True)
        iou = compute_iou(y_pred, y, include_background=True)
        hd95 = compute_hausdorff_distance(
            y_pred, y, include_background=True, percentile=95, spacing=steps
        )
        nsd = compute_surface_dice(
            y_pred, y, class_thresholds=[float(tolerance)], include_background=True, spacing=steps
        )
    return {
        "dice": float(dice.item()),
        "iou": float(iou.item()),
        "hd95": float(hd95.item()),
        "nsd": float(nsd.item()),
    }
