"""Masks: the classes of a label map, their connected components, and the one Dice of medseg.

* :func:`class_masks` splits a label map into one bool mask per foreground class. A mask whose
  only non-zero value is 255 is binary (class 1); a mask of 0, 255 and values in between (an
  anti-aliased or resampled binary mask) is refused with a message that says how to fix it.
* :func:`components` labels the connected components of a binary mask (8-connectivity in 2D,
  26 in 3D); components smaller than ``min_size`` pixels are noise and dropped.
* :func:`dice` / :func:`dice_per_item`: ``2 |A and B| / (|A| + |B|)``, 1 where both are empty.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch

from medseg.errors import InputError

MIN_SIZE = 20
"""Components with fewer pixels than this get no prompt."""


def as_binary(mask: np.ndarray, ndims: tuple[int, ...] = (2,), name: str = "mask") -> np.ndarray:
    """Return ``mask != 0`` as a bool array; raise InputError for a dimensionality not in ``ndims``."""
    mask = np.asarray(mask)
    if mask.ndim not in ndims:
        raise InputError(f"{name} must be a {' or '.join(f'{d}D' for d in ndims)} array, got shape {mask.shape}")
    return mask != 0


def class_masks(mask: np.ndarray, source: object = None, declared: Collection[int] = ()) -> list[tuple[int, np.ndarray]]:
    """(class id, bool mask) for each foreground value of a label map, in id order.

    Args:
        mask: (H, W) or (Z, Y, X) integer label map, 0 = background.
        source: the file it came from, named in errors.
        declared: the class ids the dataset declares (its class file), if any.

    A mask whose only non-zero value is 255 is binary: it becomes class 1.

    Raises:
        InputError: the mask holds 255 beside other non-zero values that the dataset does not
            declare as classes (e.g. 0/128/255 from an anti-aliased binary mask).
    """
    values = [int(v) for v in np.unique(mask) if v != 0]
    if values == [255]:
        return [(1, mask == 255)]
    if 255 in values and len(values) > 1 and not set(values) <= set(declared):
        where = f"{source}: " if source is not None else ""
        raise InputError(f"{where}mask values {values[:6]}{' ...' if len(values) > 6 else ''} look like a binary "
                         f"0/255 mask with blended edges (anti-aliased or resampled), not class ids; threshold it "
                         f"(e.g. value >= 128 -> 1) and save it as PNG, not JPEG")
    return [(v, mask == v) for v in values]


def components(mask: np.ndarray, min_size: int = MIN_SIZE) -> tuple[np.ndarray, list[int]]:
    """Label the fully connected components (8 in 2D, 26 in 3D) of a binary mask.

    Args:
        mask: (H, W) or (Z, Y, X) array; any non-zero pixel is foreground.
        min_size: components with fewer pixels than this are dropped.

    Returns:
        ``(labels, kept)``: labels is an int array of the mask's shape (0 = background, 1..K = components
        in scipy's raster-scan order of first pixel), kept lists the labels with at least
        ``min_size`` pixels, in increasing order. The order is deterministic.
    """
    from scipy import ndimage
    binary = as_binary(mask, (2, 3))
    structure = ndimage.generate_binary_structure(binary.ndim, binary.ndim)
    labels, count = ndimage.label(binary, structure=structure)
    if count == 0:
        return labels, []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    kept = [i for i in range(1, count + 1) if sizes[i] >= min_size]
    return labels, kept


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """Bool mask of the largest component of a (H, W) or (Z, Y, X) mask; None when it is empty.
    Ties go to the component first in raster order."""
    labels, kept = components(mask, min_size=1)
    if not kept:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def keep_largest(labels: np.ndarray, class_ids: Collection[int]) -> np.ndarray:
    """A label map (H, W) or (Z, Y, X) of class ids -> a copy in which each class of ``class_ids`` keeps only
    its largest connected component (the rest becomes background 0); other classes are left as they are."""
    out = labels.copy()
    for class_id in class_ids:
        mask = labels == class_id
        largest = largest_component(mask)
        if largest is not None:
            out[mask & ~largest] = 0
    return out


def _dice64(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice (B,) float64 of bool (B, ...) masks from exact counts; 1 where both are empty."""
    pred, target = pred.flatten(1).double(), target.flatten(1).double()
    inter, total = (pred * target).sum(1), pred.sum(1) + target.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def dice_per_item(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of each item of a batch of bool masks (B, ...) -> float32 (B,); 1 where both are empty."""
    return _dice64(pred, target).float()


def iou_per_item(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each item of a batch of bool masks (B, ...) -> float32 (B,), as Dice / (2 - Dice); 1 where
    both are empty."""
    d = _dice64(pred, target)
    return (d / (2 - d)).float()


def dice(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> float:
    """Dice of two masks of one shape (non-zero = foreground) in [0, 1]; 1.0 when both are empty."""
    pred_t, gt_t = (torch.as_tensor(np.asarray(m) != 0) if not isinstance(m, torch.Tensor) else m != 0
                    for m in (pred, gt))
    if pred_t.shape != gt_t.shape:
        raise InputError(f"prediction shape {tuple(pred_t.shape)} differs from ground-truth shape {tuple(gt_t.shape)}")
    return float(_dice64(pred_t.reshape(1, -1), gt_t.reshape(1, -1).to(pred_t.device))[0])


def frame_objects(frame: np.ndarray, min_pixels: int, source: object = None, declared: Collection[int] = ()) -> list[np.ndarray]:
    """Bool (S, S) masks of the objects of a label frame: components of each class, in a fixed order."""
    objects = []
    for _, binary in class_masks(frame, source, declared):
        labels, kept = components(binary, min_pixels)
        objects += [labels == k for k in kept]
    return objects
