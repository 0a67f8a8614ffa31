"""Simulated clicks in a volume (the 3D interactive protocol).

A click is ``(z, y, x, label)`` in voxel indices of the (Z, Y, X) masks it comes from; label 1 positive
(add), 0 negative (remove). The first click goes to the object's deepest voxel; each next one into the
largest connected error region (26-connectivity, as
:func:`~medseg.data.masks.components`) of the previous prediction: false negatives give a
positive click, false positives a negative one (a tie goes to the positive click). Depth is the
distance to the region's border in millimetres (``spacing``, (z, y, x)), the volume's edge counting as
border. Without ``rng`` the click sits at the deepest voxel (ties: the first in raster order; the
evaluation protocol); with ``rng`` at a random voxel at least half that deep (training).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.data.prompt_sim import error_region
from medseg.errors import InputError


def deepest_voxel(region: np.ndarray, spacing=(1.0, 1.0, 1.0), rng: np.random.Generator | None = None,
                  ) -> tuple[int, int, int]:
    """(z, y, x) of the voxel of a bool (Z, Y, X) region farthest from its border (see the module
    docstring); the work is done in the region's bounding box."""
    box = ndimage.find_objects(region.astype(np.uint8))[0]
    crop = np.pad(region[box], 1)
    depth = ndimage.distance_transform_edt(crop, sampling=spacing)[1:-1, 1:-1, 1:-1]
    if rng is None:
        index = np.unravel_index(int(np.argmax(depth)), depth.shape)
    else:
        candidates = np.argwhere(depth >= depth.max() / 2)
        index = candidates[rng.integers(len(candidates))]
    return tuple(int(s.start + i) for s, i in zip(box, index))


def sample_click_3d(gt: np.ndarray, pred: np.ndarray | None, spacing=(1.0, 1.0, 1.0),
                    rng: np.random.Generator | int | None = None) -> tuple[int, int, int, int] | None:
    """Next click ``(z, y, x, label)`` for ``pred`` against ``gt`` (both (Z, Y, X), non-zero = object);
    ``pred`` None gives the first click. None when ``pred`` equals ``gt``.

    Raises:
        InputError: shapes differ, not 3D, or ``pred`` is None and ``gt`` is empty.
    """
    gt = np.asarray(gt) != 0
    rng = None if rng is None else np.random.default_rng(rng)
    if gt.ndim != 3:
        raise InputError(f"gt must be a (Z, Y, X) mask, got shape {gt.shape}")
    if pred is None:
        if not gt.any():
            raise InputError("the ground truth is empty: there is nothing to click on")
        return (*deepest_voxel(gt, spacing, rng), 1)
    found = error_region(gt, pred)
    return None if found is None else (*deepest_voxel(found[0], spacing, rng), found[1])


def box_3d(gt: np.ndarray, jitter: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """(z0, y0, x0, z1, y1, x1) inclusive voxel box of a non-empty (Z, Y, X) mask; with ``jitter`` each side
    moves by up to that fraction of the box's extent (clipped to the volume)."""
    box = ndimage.find_objects((np.asarray(gt) != 0).astype(np.uint8))
    if not box:
        raise InputError("the ground truth is empty: it has no box")
    lo = np.array([s.start for s in box[0]], dtype=np.float64)
    hi = np.array([s.stop - 1 for s in box[0]], dtype=np.float64)
    if jitter and rng is not None:
        extent = hi - lo + 1
        lo = lo + rng.uniform(-jitter, jitter, 3) * extent
        hi = hi + rng.uniform(-jitter, jitter, 3) * extent
    shape = np.array(gt.shape) - 1
    lo, hi = np.clip(np.round(lo), 0, shape), np.clip(np.round(hi), 0, shape)
    return np.concatenate([np.minimum(lo, hi), np.maximum(lo, hi)]).astype(np.int64)
