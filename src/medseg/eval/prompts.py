"""Prompts derived from a ground-truth mask: one box or one positive click per object.

An *object* is a connected component of the mask's foreground (8-connectivity in 2D,
26-connectivity in 3D).
Components smaller than ``min_size`` pixels are noise for evaluation purposes and get no prompt.

Coordinate conventions (shared with the predictor):
    box   = (x0, y0, x1, y1) in pixels of the input image, inclusive on both ends
    point = (x, y) in pixels of the input image
    box3d = (x0, y0, z0, x1, y1, z1) in voxels of a (Z, Y, X) volume, inclusive
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.errors import InputError

MIN_SIZE = 20
"""Components with fewer pixels than this get no prompt."""



def _as_binary(mask: np.ndarray, ndims: tuple[int, ...] = (2,), name: str = "mask") -> np.ndarray:
    """Return ``mask != 0`` as a bool array; raise InputError for a dimensionality not in ``ndims``."""
    mask = np.asarray(mask)
    if mask.ndim not in ndims:
        raise InputError(f"{name} must be a {' or '.join(f'{d}D' for d in ndims)} array, got shape {mask.shape}")
    return mask != 0


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
    binary = _as_binary(mask, (2, 3))
    structure = ndimage.generate_binary_structure(binary.ndim, binary.ndim)
    labels, count = ndimage.label(binary, structure=structure)
    if count == 0:
        return labels, []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    kept = [i for i in range(1, count + 1) if sizes[i] >= min_size]
    return labels, kept


def boxes_from_mask(mask: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """Tight box of each connected component of ``mask`` with at least ``min_size`` pixels.

    Args:
        mask: (H, W) array; any non-zero pixel is foreground.
        min_size: smaller components get no box.

    Returns:
        (N, 4) float32 array of (x0, y0, x1, y1), inclusive pixel coordinates of the input
        image, one row per kept component in the order of :func:`components`. N may be 0.
    """
    labels, kept = components(_as_binary(mask), min_size)
    slices = ndimage.find_objects(labels)
    boxes = np.zeros((len(kept), 4), dtype=np.float32)
    for row, label in enumerate(kept):
        ys, xs = slices[label - 1]
        boxes[row] = (xs.start, ys.start, xs.stop - 1, ys.stop - 1)
    return boxes


def boxes3d_from_mask(mask: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """Tight 3D box of each 26-connected component of a (Z, Y, X) mask with >= ``min_size`` voxels.

    Returns (N, 6) float32 rows of (x0, y0, z0, x1, y1, z1), inclusive voxel indices.
    """
    labels, kept = components(_as_binary(mask, (3,)), min_size)
    slices = ndimage.find_objects(labels)
    boxes = np.zeros((len(kept), 6), dtype=np.float32)
    for row, label in enumerate(kept):
        zs, ys, xs = slices[label - 1]
        boxes[row] = (xs.start, ys.start, zs.start, xs.stop - 1, ys.stop - 1, zs.stop - 1)
    return boxes


def deepest_point(component: np.ndarray) -> tuple[int, int]:
    """(y, x) of the pixel of a bool (h, w) component farthest from its border.

    The component is padded by one background pixel on every side, so the edge of the
    array counts as border. Among equally deep pixels the one closest to the centroid of
    the component wins; remaining ties go to the first in raster order (row, then column).
    """
    depth = ndimage.distance_transform_edt(np.pad(component, 1))[1:-1, 1:-1]
    deepest = np.argwhere(depth == depth.max())  # (K, 2) rows of (y, x), raster order
    centroid = np.argwhere(component).mean(axis=0)
    gap = ((deepest - centroid) ** 2).sum(axis=1)
    y, x = deepest[int(np.argmin(gap))]  # argmin returns the first minimum: raster order
    return int(y), int(x)


def points_from_mask(mask: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """One positive click per connected component, at its interior point farthest from its border.

    Args:
        mask: (H, W) array; any non-zero pixel is foreground.
        min_size: smaller components get no click.

    Returns:
        (N, 2) float32 array of (x, y) pixel coordinates of the input image, one row per kept
        component in the order of :func:`components` (the same order as
        :func:`boxes_from_mask`). Each click lies on a pixel of its own component.
    """
    labels, kept = components(_as_binary(mask), min_size)
    slices = ndimage.find_objects(labels)
    points = np.zeros((len(kept), 2), dtype=np.float32)
    for row, label in enumerate(kept):
        ys, xs = slices[label - 1]
        y, x = deepest_point(labels[ys, xs] == label)
        points[row] = (xs.start + x, ys.start + y)
    return points
