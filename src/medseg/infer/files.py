"""Segment a file (2D picture or 3D volume) from prompts given in the file's own pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.cases import plane
from ..data.prompts import is_lone_click
from ..errors import InputError
from ..io import Image, read_image
from .predictor import Predictor
from .volume import segment_volume


@dataclass
class FileResult:
    """labels: (Z, Y, X) uint8 label map, object k has id k (1..N); image: what was read;
    key_slice: the slice a person should look at; boxes/points: the prompts on that slice."""

    labels: np.ndarray
    image: Image
    key_slice: int
    scores: list[float]
    boxes: np.ndarray | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None


def segment_file(predictor: Predictor, path: str | Path | Image, boxes: list[list[float]] | None = None,
                 points: list[list[float]] | None = None, negative_points: list[list[float]] | None = None,
                 slices: tuple[int, int] | None = None, key_slice: int | None = None,
                 modality: str | None = None, propagate: bool = False, multimask: bool = False,
                 progress: bool = True, output_hw: tuple[int, int] | None = None) -> FileResult:
    """Segment the objects of one file (``path``, or an :class:`~medseg.io.Image` already read from it).

    2D: each box (x0, y0, x1, y1) is one object; points (x, y) and negative points belong to the
    single object of a single box, or form one object on their own. 3D: each box is
    (x0, y0, z0, x1, y1, z1), or (x0, y0, x1, y1) with ``slices=(z0, z1)``; box prompts only.
    """
    image = path if isinstance(path, Image) else read_image(path, modality=modality)
    path = image.meta.source
    boxes = [list(map(float, b)) for b in (boxes or [])]
    pos, neg = [list(map(float, p)) for p in (points or [])], [list(map(float, p)) for p in (negative_points or [])]
    from .volume_prompts import VolumePredictor

    if isinstance(predictor, VolumePredictor):
        return _segment_volume_prompts(predictor, image, boxes, pos, neg, progress)
    if output_hw is not None and (image.array.shape[1] > 1 or image.meta.affine is not None):
        raise InputError(f"{path}: an output size applies to 2D pictures (PNG, JPEG, BMP, TIFF), whose pixels have "
                         f"no world geometry to keep; drop --output-size")
    if image.array.shape[1] > 1:
        return _segment_volume(predictor, image, boxes, pos + neg, slices, key_slice, propagate, progress)
    if any(len(b) != 4 for b in boxes):
        raise InputError(f"{path}: a 2D box has 4 numbers X0 Y0 X1 Y1, got {boxes}")
    if any(len(p) != 2 for p in pos + neg):
        raise InputError(f"{path}: a click on a 2D picture has 2 numbers X Y, got {pos + neg}")
    if not boxes and not pos:
        raise InputError(f"{path}: give a prompt: --box X0 Y0 X1 Y1 and/or --point X Y.")
    if (pos or neg) and len(boxes) > 1:
        raise InputError(f"{path}: points refine one object; give them with a single --box.")
    predictor.set_image(plane(image), modality=image.meta.modality)
    kwargs: dict = {}
    pts = lab = None
    if boxes:
        kwargs["box"] = np.array(boxes)
    if pos or neg:
        pts = np.array(pos + neg)
        lab = np.array([1] * len(pos) + [0] * len(neg))
        kwargs.update(points=pts[None], point_labels=lab[None])
    kwargs["multimask"] = multimask or is_lone_click(kwargs.get("box"), pts, None)
    out = predictor.predict(**kwargs, output_hw=output_hw)
    best = out.scores.argmax(axis=1)
    labels = np.zeros(out.masks.shape[2:], dtype=np.uint8)
    for k, m in enumerate(out.masks[np.arange(len(best)), best]):
        labels[m] = k + 1
    scores = [float(s) for s in out.scores[np.arange(len(best)), best]]
    if output_hw is not None:  # the picture and its prompts on the output grid, for the overlay
        factor = np.array([output_hw[1] / image.array.shape[3], output_hw[0] / image.array.shape[2]])
        image = resized_picture(image, output_hw)
        kwargs["box"] = None if "box" not in kwargs else kwargs["box"] * np.tile(factor, 2)
        pts = None if pts is None else pts * factor
    return FileResult(labels[None], image, 0, scores, kwargs.get("box"), pts, lab)


def resized_picture(image: Image, output_hw: tuple[int, int]) -> Image:
    """A 2D picture (C, 1, H, W) resampled (bilinear) to (C, 1, H', W'), in its own dtype, its pixel spacing
    scaled so that it covers what the original did."""
    import dataclasses

    import torch
    import torch.nn.functional as F

    c, _, h, w = image.array.shape
    x = torch.from_numpy(np.ascontiguousarray(image.array[:, 0], dtype=np.float32))[None]
    array = F.interpolate(x, size=tuple(output_hw), mode="bilinear", align_corners=False)[0].numpy()
    if np.issubdtype(image.array.dtype, np.integer):
        info = np.iinfo(image.array.dtype)
        array = np.clip(np.rint(array), info.min, info.max)
    spacing = (image.meta.spacing[0], image.meta.spacing[1] * h / output_hw[0], image.meta.spacing[2] * w / output_hw[1])
    meta = dataclasses.replace(image.meta, spacing=spacing, shape=(1, *output_hw))
    return Image(array[:, None].astype(image.array.dtype), meta)


def _segment_volume_prompts(predictor, image: Image, boxes, points, negative_points, progress) -> FileResult:
    """One object of a volume from 3D clicks (x, y, z) and/or one 3D box, with a promptable 3D model."""
    src = image.meta.source
    if image.array.shape[1] < 2:
        raise InputError(f"{src}: a 2D picture; a promptable 3D model segments volumes (use --model litemedsam)")
    if image.array.shape[0] != 1:
        raise InputError(f"{src}: volumes with {image.array.shape[0]} channels are not supported; give one channel.")
    clicks = points + negative_points
    if any(len(p) != 3 for p in clicks):
        raise InputError(f"{src}: a click in a volume has 3 numbers X Y Z, got {clicks}")
    if len(boxes) > 1 or any(len(b) != 6 for b in boxes):
        raise InputError(f"{src}: give one 3D box X0 Y0 Z0 X1 Y1 Z1, got {boxes}")
    if not boxes and not clicks:
        raise InputError(f"{src}: give a prompt: --point X Y Z and/or --box X0 Y0 Z0 X1 Y1 Z1.")
    labels = [1] * len(points) + [0] * len(negative_points)
    predictor.set_volume(image.array[0], image.meta.spacing, image.meta.modality, progress=progress)
    out = predictor.predict(points=clicks or None, point_labels=labels or None, box=boxes[0] if boxes else None)
    key = int(round(clicks[0][2])) if clicks else int(boxes[0][2] + boxes[0][5]) // 2
    on_key = [p[:2] for p in clicks if int(round(p[2])) == key]
    on_key_labels = [lab for p, lab in zip(clicks, labels) if int(round(p[2])) == key]
    box = np.array([[b[0], b[1], b[3], b[4]] for b in boxes if b[2] <= key <= b[5]]) if boxes else None
    return FileResult(out.mask.astype(np.uint8), image, key, [],
                      box, np.array(on_key) if on_key else None, np.array(on_key_labels) if on_key else None)


def _segment_volume(predictor, image, boxes, points, slices, key_slice, propagate, progress) -> FileResult:
    src = image.meta.source
    if points:
        raise InputError(f"{src}: clicks in a volume need a promptable 3D model (--model litemedsam-3d); with a 2D "
                         f"model give a 3D box.")
    if not boxes:
        raise InputError(f"{src}: give a 3D box: --box X0 Y0 Z0 X1 Y1 Z1, or --box X0 Y0 X1 Y1 --slices Z0 Z1.")
    if image.array.shape[0] != 1:
        raise InputError(f"{src}: volumes with {image.array.shape[0]} channels are not supported; give one channel.")
    labels = np.zeros(image.array.shape[1:], dtype=np.uint8)
    boxes3d = []
    for box in boxes:
        if len(box) == 4:
            if slices is None:
                raise InputError(f"{src} is a volume: give --slices Z0 Z1 with a 4-number box, or a 6-number 3D box.")
            box = [box[0], box[1], slices[0], box[2], box[3], slices[1]]
        elif len(box) != 6:
            raise InputError(f"{src}: a box has 4 (with --slices) or 6 numbers, got {box}")
        boxes3d.append(box)
        mask = segment_volume(predictor, image.array[0], box, modality=image.meta.modality,
                              key_slice=key_slice, propagate=propagate, progress=progress)
        labels[mask > 0] = len(boxes3d)
    first = boxes3d[0]
    key = int(key_slice) if key_slice is not None else int(first[2] + first[5]) // 2
    on_key = np.array([[b[0], b[1], b[3], b[4]] for b in boxes3d if b[2] <= key <= b[5]])
    return FileResult(labels, image, key, [], on_key)
