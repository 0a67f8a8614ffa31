"""Prompts derived from a ground-truth mask: boxes (tight or jittered), deepest interior points.

An *object* is a connected component of the mask's foreground (:func:`medseg.data.masks.components`:
8-connectivity in 2D, 26 in 3D); components smaller than ``min_size`` pixels get no prompt.

Coordinate conventions (shared with the predictor):
    box   = (x0, y0, x1, y1) in pixels of the input image, inclusive on both ends
    point = (x, y) in pixels of the input image
    box3d = (x0, y0, z0, x1, y1, z1) in voxels of a (Z, Y, X) volume, inclusive
"""

from __future__ import annotations

import numpy as np

from medseg.data.masks import MIN_SIZE, as_binary, components
from medseg.errors import InputError

__all__ = ["MIN_SIZE", "boxes3d_from_mask", "boxes_from_mask", "deepest_point", "is_lone_click", "jitter_box", "mask_box",
           "object_box", "points_from_mask"]


def _tight(slices: tuple[slice, ...]) -> tuple[int, ...]:
    """Inclusive (x0, y0[, z0], x1, y1[, z1]) of the bounding slices (Z, Y, X) or (Y, X) of an object."""
    starts = [s.start for s in reversed(slices)]
    return (*starts, *[s.stop - 1 for s in reversed(slices)])


def is_lone_click(box, points, mask_input) -> bool:
    """Whether each object's prompt is one click and nothing else (no box, no mask): SAM's ambiguous case
    (a part or the whole?), where the predictor asks for its 3 candidates and keeps the one with the best
    predicted IoU. ``points`` is (K, 2) clicks of one object, (N, K, 2) of N objects, or None."""
    return box is None and mask_input is None and points is not None and np.asarray(points).shape[-2] == 1


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box (4,) float32 (x0, y0, x1, y1), inclusive, of all foreground of a (H, W) mask."""
    from scipy import ndimage
    found = ndimage.find_objects(as_binary(mask).astype(np.uint8))
    if not found:
        raise InputError("the mask has no foreground: there is no box to draw around it")
    return np.array(_tight(found[0]), dtype=np.float32)


def object_box(mask: np.ndarray, jitter: float = 0.0, rng: np.random.Generator | int | list[int] | None = None,
               shape: tuple[int, int] | None = None) -> np.ndarray:
    """Tight box (4,) float32 (x0, y0, x1, y1) of a (H, W) mask, each side moved by up to ``jitter``
    of the box's width/height (uniform, no pixel cap; :func:`jitter_box`) and clipped to ``shape``
    (h, w) when jitter > 0. The training box of one object."""
    box = mask_box(mask)
    return jitter_box(box, rng, jitter, max_pixels=None, shape=shape) if jitter > 0 else box


def boxes_from_mask(mask: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """Tight box of each connected component of ``mask`` with at least ``min_size`` pixels.

    Args:
        mask: (H, W) array; any non-zero pixel is foreground.
        min_size: smaller components get no box.

    Returns:
        (N, 4) float32 array of (x0, y0, x1, y1), inclusive pixel coordinates of the input
        image, one row per kept component in the order of :func:`components`. N may be 0.
    """
    from scipy import ndimage
    labels, kept = components(as_binary(mask), min_size)
    slices = ndimage.find_objects(labels)
    boxes = np.zeros((len(kept), 4), dtype=np.float32)
    for row, label in enumerate(kept):
        boxes[row] = _tight(slices[label - 1])
    return boxes


def boxes3d_from_mask(mask: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """Tight 3D box of each 26-connected component of a (Z, Y, X) mask with >= ``min_size`` voxels.

    Returns (N, 6) float32 rows of (x0, y0, z0, x1, y1, z1), inclusive voxel indices.
    """
    from scipy import ndimage
    labels, kept = components(as_binary(mask, (3,)), min_size)
    slices = ndimage.find_objects(labels)
    boxes = np.zeros((len(kept), 6), dtype=np.float32)
    for row, label in enumerate(kept):
        boxes[row] = _tight(slices[label - 1])
    return boxes


def deepest_point(component: np.ndarray) -> tuple[int, int]:
    """(y, x) of the pixel of a bool (h, w) component farthest from its border.

    The component is padded by one background pixel on every side, so the edge of the
    array counts as border. Among equally deep pixels the one closest to the centroid of
    the component wins; remaining ties go to the first in raster order (row, then column).
    """
    from scipy import ndimage
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
    from scipy import ndimage
    labels, kept = components(as_binary(mask), min_size)
    slices = ndimage.find_objects(labels)
    points = np.zeros((len(kept), 2), dtype=np.float32)
    for row, label in enumerate(kept):
        ys, xs = slices[label - 1]
        y, x = deepest_point(labels[ys, xs] == label)
        points[row] = (xs.start + x, ys.start + y)
    return points


def jitter_box(box: np.ndarray, rng: np.random.Generator | int | None, max_shift: float = 0.1, *,
               max_pixels: float | None = 20.0, shape: tuple[int, int] | None = None,
               expand_only: bool = False) -> np.ndarray:
    """Randomly perturb ground-truth boxes the way SAM / MedSAM train on them.

    Args:
        box: (4,) or (N, 4) (x0, y0, x1, y1), inclusive pixels.
        rng: a ``np.random.Generator`` (or a seed).
        max_shift: each coordinate moves by a uniform amount in [-s, s] with
            s = ``max_shift`` * the box's side along that axis (width x1 - x0 + 1 for x, height for y),
        max_pixels: ... capped at this many pixels (MedSAM: 20; None = no cap).
        shape: (H, W) of the image; the result is clipped to [0, W - 1] x [0, H - 1].
        expand_only: move every edge outwards only (MedSAM), so the box still holds the object.

    Returns:
        float32 boxes of the input's shape, with x0 <= x1 and y0 <= y1.
    """
    rng = np.random.default_rng(rng)
    b = np.asarray(box, dtype=np.float64)
    boxes = b.reshape(-1, 4)
    width, height = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    limit = max_shift * np.stack([width, height, width, height], axis=1)
    if max_pixels is not None:
        limit = np.minimum(limit, max_pixels)
    shift = rng.uniform(-1.0, 1.0, boxes.shape) * limit
    if expand_only:
        shift = np.abs(shift) * np.array([-1, -1, 1, 1])
    out = boxes + shift
    out = np.concatenate([np.minimum(out[:, :2], out[:, 2:]), np.maximum(out[:, :2], out[:, 2:])], axis=1)
    if shape is not None:
        out = np.clip(out, 0, [shape[1] - 1, shape[0] - 1] * 2)
    return out.reshape(b.shape).astype(np.float32)
