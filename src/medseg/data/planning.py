"""3D planning from a dataset's fingerprint, and the preprocessing it fixes (nnU-Net's idea, written here).

    fp = fingerprint(dataset_cases("la_heart_mri", "train"))   # spacings, shapes, foreground intensities
    plan = make_plan(fp)                                         # target spacing, normalisation, patch size
    x, y, record = preprocess(image, label, plan)                # crop, resample, normalise
    back = restore_label(prediction, record)                     # a (Z, Y, X) label map on the input's grid

Conventions: arrays are ``(C, Z, Y, X)`` images and ``(Z, Y, X)`` labels, spacings ``(z, y, x)`` in mm,
as everywhere in :mod:`medseg.io`. A :class:`Plan` is plain data (``to_dict`` / ``from_dict``), so a run
and a checkpoint store it and inference preprocesses exactly as training did.

The rules:

* **Crop** to the bounding box of the voxels where any channel is non-zero (a volume with no zero
  border keeps its shape); the box is recorded to put predictions back.
* **Target spacing**: the median spacing of each axis; when one axis is coarser than the finest by more
  than ``ANISOTROPY`` (thick slices, e.g. ACDC's 5-10 mm) and holds few voxels (fewer than three
  patch divisors), that axis takes the 10th percentile of its spacings instead of the median (never
  finer than the finest axis), so the cases with thinner slices keep them; the fine axes are never
  resampled to the coarse one.
* **Resampling**: images by cubic spline (linear along a coarse axis), labels by nearest neighbour;
  voxel edges stay aligned (``grid_mode``), so a label resampled there and back lands on its voxels.
* **Normalisation**: CT: clip to the 0.5th and 99.5th percentiles of the training foreground, then
  z-score with the foreground's mean and standard deviation; every other modality: z-score per volume.
* **Patch size**: the median shape at the target spacing, each side a multiple of ``divisor``, shrunk
  (largest physical side first) until ``patch_voxels`` holds; ``batch_size`` fills the same budget.
* **Pooling** (:func:`pool_strides`, for a U-Net of ``levels`` down-samplings): at each level an axis is
  halved only while its spacing is at most twice the finest axis's (and its size is even), so a
  thick-slice stack (ACDC: 10 mm slices, 1.4 mm pixels) is pooled in-plane until its pixels are about as
  coarse as its slices, and the network never blurs 10 slices into one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from medseg.errors import InputError

ANISOTROPY = 3.0
"""An axis whose spacing exceeds the finest axis's by this factor counts as coarse."""
PATCH_VOXELS = 96 ** 3
"""Default voxel budget of one training patch times its batch (about 0.9 M voxels: CPU-sized)."""
FOREGROUND_SAMPLES = 10_000
"""Foreground intensities kept per case for the CT statistics (drawn with a fixed seed)."""


@dataclass
class Fingerprint:
    """What planning needs to know of a dataset: per case spacing ``(z, y, x)`` mm and cropped shape
    ``(Z, Y, X)``; foreground intensity statistics of channel 0; the label ids seen; the modality."""

    spacings: list[tuple[float, float, float]]
    shapes: list[tuple[int, int, int]]
    foreground: dict[str, float]
    classes: list[int]
    modality: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    """How a dataset is preprocessed and cut into patches; ``to_dict`` / ``from_dict`` round-trip it."""

    target_spacing: tuple[float, float, float]
    normalization: str                      # "ct" or "zscore"
    patch_size: tuple[int, int, int]
    batch_size: int
    median_shape: tuple[int, int, int]      # at the target spacing
    classes: list[int]
    modality: str | None = None
    ct_clip: tuple[float, float] | None = None
    ct_mean: float | None = None
    ct_std: float | None = None
    coarse_axes: list[int] = field(default_factory=list)
    keep_largest: list[int] = field(default_factory=list)  # classes reduced to their largest component
    pool_strides: list[tuple[int, int, int]] | None = None  # per U-Net level (z, y, x); None: 2 on every axis

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        try:
            plan = cls(**data)
        except TypeError as exc:
            raise InputError(f"not a medseg plan ({exc}); make one with `medseg data plan DATASET`") from exc
        plan.target_spacing = tuple(float(s) for s in plan.target_spacing)
        plan.patch_size, plan.median_shape = tuple(plan.patch_size), tuple(plan.median_shape)
        if plan.ct_clip is not None:
            plan.ct_clip = tuple(plan.ct_clip)
        if plan.pool_strides is not None:
            plan.pool_strides = [tuple(int(v) for v in level) for level in plan.pool_strides]
        return plan

    def describe(self) -> str:
        """A few lines for a person: what the plan does to each volume."""
        norm = (f"CT: clip to [{self.ct_clip[0]:g}, {self.ct_clip[1]:g}], z-score with foreground mean "
                f"{self.ct_mean:g} and std {self.ct_std:g}" if self.normalization == "ct" else "z-score per volume")
        coarse = f" (coarse axes {', '.join('zyx'[a] for a in self.coarse_axes)})" if self.coarse_axes else ""
        return "\n".join([
            f"target spacing (z, y, x): {' x '.join(f'{s:g}' for s in self.target_spacing)} mm{coarse}",
            f"median shape at that spacing (Z, Y, X): {' x '.join(map(str, self.median_shape))}",
            f"patch (Z, Y, X): {' x '.join(map(str, self.patch_size))}, batch {self.batch_size}",
            *([f"pooling per U-Net level (z, y, x): {' '.join('x'.join(map(str, lv)) for lv in self.pool_strides)}"]
              if self.pool_strides else []),
            f"normalisation: {norm}",
            f"classes: {', '.join(map(str, self.classes))}",
            *([f"post-processing: only the largest connected component of class(es) "
               f"{', '.join(map(str, self.keep_largest))}"] if self.keep_largest else []),
        ])


def nonzero_box(image: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box (slices over Z, Y, X) of the voxels where any channel of ``image`` (C, Z, Y, X) is
    non-zero; the whole volume when all of it is zero."""
    nonzero = np.any(image != 0, axis=0)
    if not nonzero.any():
        return tuple(slice(0, n) for n in nonzero.shape)
    box = []
    for axis in range(3):
        hit = np.flatnonzero(nonzero.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def fingerprint(cases, modality: str | None = None, progress: bool = True, seed: int = 0) -> Fingerprint:
    """Read every case (labelled, 3D) once: spacing, shape after cropping, foreground intensities."""
    from medseg.data.cases import load_case

    if not cases:
        raise InputError("no cases to plan from: give a dataset split with labelled volumes")
    rng = np.random.default_rng(seed)
    spacings, shapes, samples, classes = [], [], [], set()
    for case in tqdm(cases, desc="fingerprint", unit="case", disable=not progress, leave=False):
        image, label = load_case(case)
        if label is None:
            raise InputError(f"{case.image_path}: planning needs labelled cases; this one has no mask")
        if image.array.shape[1] == 1:
            raise InputError(f"{case.image_path}: a 2D picture (one slice); 3D planning is for volumes")
        if not np.isfinite(image.array).all():
            raise InputError(f"{case.image_path}: holds NaN/Inf voxels; replace them before planning")
        box = nonzero_box(image.array)
        spacings.append(tuple(float(s) for s in image.meta.spacing))
        shapes.append(tuple(s.stop - s.start for s in box))
        fg = image.array[0][label.array > 0]
        if fg.size:
            samples.append(rng.choice(fg, min(FOREGROUND_SAMPLES, fg.size), replace=False).astype(np.float64))
        classes.update(int(c) for c in np.unique(label.array) if c > 0)
    values = np.concatenate(samples) if samples else np.zeros(1)
    foreground = {"mean": float(values.mean()), "std": float(values.std()), "p00_5": float(np.percentile(values, 0.5)),
                  "p99_5": float(np.percentile(values, 99.5)), "count": int(values.size)}
    return Fingerprint(spacings, shapes, foreground, sorted(classes), modality)


def pool_strides(spacing: tuple[float, float, float], patch: tuple[int, int, int],
                 levels: int) -> list[tuple[int, int, int]]:
    """Each U-Net level's down-sampling (z, y, x), 1 or 2 per axis (the rule in the module docstring):
    ``spacing`` of the patch's voxels in mm, ``patch`` its (Z, Y, X) size."""
    spacing, size, out = [float(s) for s in spacing], [int(n) for n in patch], []
    for _ in range(levels):
        finest = min(spacing)
        step = tuple(2 if spacing[a] <= 2 * finest and size[a] % 2 == 0 else 1 for a in range(3))
        spacing = [s * k for s, k in zip(spacing, step)]
        size = [n // k for n, k in zip(size, step)]
        out.append(step)
    return out


def make_plan(fp: Fingerprint, patch_voxels: int = PATCH_VOXELS, divisor: int = 16,
              target_spacing: tuple[float, float, float] | None = None, levels: int | None = 4) -> Plan:
    """The plan for a fingerprint (rules in the module docstring); ``target_spacing`` (Z, Y, X) mm
    replaces the rule's spacing (a coarser one lets a patch hold a whole organ, nnU-Net's "3d_lowres");
    ``levels``: the down-samplings of the U-Net the plan is for (None: no pooling plan, e.g. a ViT)."""
    spacings, shapes = np.array(fp.spacings, dtype=float), np.array(fp.shapes, dtype=float)
    median_extent = np.median(spacings * shapes, axis=0)  # mm
    if target_spacing is not None:
        if len(target_spacing) != 3 or not all(float(t) > 0 for t in target_spacing):
            raise InputError(f"target spacing {list(target_spacing)}: give three positive numbers (Z, Y, X) in mm")
        target = np.array(target_spacing, dtype=float)
        coarse = [a for a in range(3) if target[a] > ANISOTROPY * target.min()]
    else:
        target = np.median(spacings, axis=0)
        coarse = [a for a in range(3) if target[a] > ANISOTROPY * target.min()]
        for a in coarse:  # few thick slices: the 10th percentile keeps the thinner ones of some cases
            if median_extent[a] / target[a] < 3 * divisor:
                target[a] = max(np.percentile(spacings[:, a], 10), target.min())
    median_shape = np.maximum(np.round(median_extent / target), 1).astype(int)
    patch = np.array([max(divisor, math.ceil(s / divisor) * divisor) for s in median_shape])
    while patch.prod() > patch_voxels and patch.max() > divisor:
        physical = patch * target
        candidates = [a for a in range(3) if patch[a] > divisor]
        a = max(candidates, key=lambda i: physical[i])
        patch[a] -= divisor
    batch = int(max(1, min(8, patch_voxels // patch.prod())))
    ct = (fp.modality or "").upper() == "CT"
    fg = fp.foreground
    return Plan(target_spacing=tuple(round(float(t), 4) for t in target), normalization="ct" if ct else "zscore",
                patch_size=tuple(int(p) for p in patch), batch_size=batch,
                median_shape=tuple(int(s) for s in median_shape), classes=list(fp.classes), modality=fp.modality,
                ct_clip=(fg["p00_5"], fg["p99_5"]) if ct else None, ct_mean=fg["mean"] if ct else None,
                ct_std=max(fg["std"], 1e-8) if ct else None, coarse_axes=coarse,
                pool_strides=None if levels is None else pool_strides(target, patch, levels))


@dataclass
class Record:
    """What :func:`preprocess` did to one volume, to put a prediction back: the input's spatial shape,
    the crop box ``(z0, z1, y0, y1, x0, x1)`` and the shape after resampling."""

    shape: tuple[int, int, int]
    box: tuple[int, int, int, int, int, int]
    resampled: tuple[int, int, int]


def resampled_shape(shape, spacing, target) -> tuple[int, int, int]:
    """The (Z, Y, X) shape of a volume of ``shape`` at ``spacing`` once resampled to ``target`` (mm)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def resample_image(array: np.ndarray, shape, coarse_axes=()) -> np.ndarray:
    """(C, Z, Y, X) -> (C, *shape) float32: cubic spline, linear along ``coarse_axes``."""
    from scipy import ndimage

    out = []
    for channel in array.astype(np.float32, copy=False):
        if tuple(channel.shape) == tuple(shape):
            out.append(channel)
            continue
        zoom = [n / o for n, o in zip(shape, channel.shape)]
        fine = [1.0 if a in coarse_axes else z for a, z in enumerate(zoom)]
        result = ndimage.zoom(channel, fine, order=3, mode="nearest", grid_mode=True)
        if coarse_axes and tuple(result.shape) != tuple(shape):
            rest = [n / o for n, o in zip(shape, result.shape)]
            result = ndimage.zoom(result, rest, order=1, mode="nearest", grid_mode=True)
        out.append(result.astype(np.float32))
    return np.stack(out)


def resample_label(label: np.ndarray, shape) -> np.ndarray:
    """(Z, Y, X) integer labels -> ``shape``, nearest neighbour (labels are never blended)."""
    from scipy import ndimage

    if tuple(label.shape) == tuple(shape):
        return label
    zoom = [n / o for n, o in zip(shape, label.shape)]
    return ndimage.zoom(label, zoom, order=0, mode="nearest", grid_mode=True).astype(label.dtype)


def normalize(array: np.ndarray, plan: Plan) -> np.ndarray:
    """(C, Z, Y, X) -> float32 by the plan's scheme (CT: clip + foreground z-score; else per volume)."""
    x = array.astype(np.float32)
    if plan.normalization == "ct":
        lo, hi = plan.ct_clip
        return (np.clip(x, lo, hi) - plan.ct_mean) / plan.ct_std
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / np.maximum(std, 1e-8)


def preprocess(image, label, plan: Plan) -> tuple[np.ndarray, np.ndarray | None, Record]:
    """An :class:`~medseg.io.Image` (and its :class:`~medseg.io.Label`, or None) -> the network's input
    (C, Z', Y', X') float32, the label (Z', Y', X') or None, and the :class:`Record` to undo it."""
    array = np.asarray(image.array)
    if not np.isfinite(array).all():
        raise InputError(f"{image.meta.source or 'the volume'}: holds NaN/Inf voxels; replace them first")
    box = nonzero_box(array)
    cropped = array[(slice(None), *box)]
    shape = resampled_shape(cropped.shape[1:], image.meta.spacing, plan.target_spacing)
    x = normalize(resample_image(cropped, shape, plan.coarse_axes), plan)
    y = None if label is None else resample_label(np.asarray(label.array)[box], shape)
    flat = tuple(v for s in box for v in (s.start, s.stop))
    return x, y, Record(tuple(int(n) for n in array.shape[1:]), flat, shape)


def restore_label(prediction: np.ndarray, record: Record) -> np.ndarray:
    """A (Z', Y', X') label map in the preprocessed frame -> (Z, Y, X) on the input's grid (zero outside
    the crop), by nearest neighbour."""
    if tuple(prediction.shape) != tuple(record.resampled):
        raise InputError(f"prediction shape {tuple(prediction.shape)} is not the preprocessed shape "
                         f"{tuple(record.resampled)} this record describes")
    z0, z1, y0, y1, x0, x1 = record.box
    out = np.zeros(record.shape, dtype=prediction.dtype)
    out[z0:z1, y0:y1, x0:x1] = resample_label(prediction, (z1 - z0, y1 - y0, x1 - x0))
    return out
