"""The containers medseg reads into: :class:`Meta`, :class:`Image` and :class:`Label`.

Axis order and world coordinates (one convention for every format)
-----------------------------------------------------------------
* ``Image.array`` has shape ``(C, Z, Y, X)``: channel first, then slice, row, column. ``X`` is the
  fastest-varying index (a column of a picture), ``Y`` a row, ``Z`` a slice. A 2D picture has
  ``Z == 1``.
* ``Label.array`` has shape ``(Z, Y, X)`` with an integer dtype.
* ``Meta.spacing`` is ``(z, y, x)`` in mm, in *array* axis order (1.0 for plain 2D pictures).
* World coordinates are **RAS+ in mm** (+x towards the patient's Right, +y Anterior, +z
  Superior), the NIfTI/nibabel convention. Formats that store LPS+ (DICOM, MHA, NRRD, i.e. ITK:
  +x Left, +y Posterior) are converted by negating the first two world axes.
* ``Meta.affine`` (4x4) maps a voxel index written as ``(x, y, z, 1)`` -- note: the *reverse* of
  the array axis order, so ``array[..., k, j, i]`` sits at ``affine @ (i, j, k, 1)`` -- to RAS+ mm
  of the voxel centre. ``None`` for plain pictures and TIFF, which have no world geometry.
* ``Meta.origin`` is ``(x, y, z)``: the RAS+ position in mm of the centre of voxel ``[0, 0, 0]``.
* ``Meta.direction`` is a 3x3 array whose *columns* are the RAS+ unit vectors of the array axes
  X, Y and Z (in that order), so ``affine[:3, :3] == direction @ diag(spacing[::-1])``.

Private fields (``_nifti_header``, ``_itk``) keep each format's native geometry so a file can be
written back with exactly the same header geometry (see :mod:`medseg.io.writers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Flips world x and y; its own inverse, so it also maps RAS to LPS."""


@dataclass(eq=False)
class Meta:
    """Where an array came from and where its voxels lie in the world (conventions: module doc).

    ``shape`` is the spatial shape ``(Z, Y, X)`` of the array read (None if unknown);
    ``dtype`` is the dtype stored in the file (before any rescaling); ``format`` is one of
    "png", "jpeg", "bmp", "tiff", "nifti", "mha", "nrrd", "dicom", "dicom-series";
    ``modality`` is e.g. "CT" or "MR" (DICOM Modality tag, MetaImage Modality field) or None.
    """

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    affine: np.ndarray | None = None
    modality: str | None = None
    source: Path | None = None
    format: str = ""
    dtype: str = ""
    shape: tuple[int, int, int] | None = None
    # Native header of a NIfTI file (a nibabel Nifti1Header/Nifti2Header copy).
    _nifti_header: Any = field(default=None, repr=False)
    # Native ITK geometry, LPS, in ITK order: {"origin", "spacing", "direction"} tuples exactly as
    # SimpleITK reports them (len 2, 3 or 4 per axis), for MHA/NRRD/DICOM.
    _itk: dict | None = field(default=None, repr=False)

    def world_affine(self) -> np.ndarray:
        """``affine`` if known, else the one implied by spacing, origin and direction."""
        if self.affine is not None:
            return np.array(self.affine, dtype=float)
        return compose_affine(self.spacing, self.origin, self.direction)


@dataclass(eq=False)
class Image:
    """An intensity image: ``array`` of shape ``(C, Z, Y, X)`` and its :class:`Meta`.

    Grey pictures have ``C == 1``, RGB ``C == 3``; an alpha channel (RGBA, LA) is dropped, so
    RGBA gives ``C == 3``. A palette picture is expanded to RGB. ``array`` keeps the file's own
    dtype (uint8, uint16, int16, float32 ...) unless the file asks for rescaling (DICOM
    RescaleSlope/Intercept, NIfTI scl_slope/scl_inter), which gives float32.
    """

    array: np.ndarray
    meta: Meta

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return tuple(int(s) for s in self.array.shape[1:])


@dataclass(eq=False)
class Label:
    """A label map: integer ``array`` of shape ``(Z, Y, X)`` (0 = background) and its :class:`Meta`.

    Labels are categorical: never interpolate them linearly; use :func:`resize_label` (nearest).
    """

    array: np.ndarray
    meta: Meta

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return tuple(int(s) for s in self.array.shape)


def compose_affine(spacing, origin, direction) -> np.ndarray:
    """4x4 RAS+ affine of spacing ``(z, y, x)``, origin ``(x, y, z)``, direction (cols X, Y, Z)."""
    aff = np.eye(4)
    aff[:3, :3] = np.asarray(direction, float) @ np.diag(np.asarray(spacing, float)[::-1])
    aff[:3, 3] = np.asarray(origin, float)
    return aff


def decompose_affine(affine: np.ndarray) -> tuple[tuple, tuple, np.ndarray]:
    """``(spacing (z, y, x), origin (x, y, z), direction 3x3)`` of a 4x4 RAS+ affine."""
    aff = np.asarray(affine, float)
    norms = np.linalg.norm(aff[:3, :3], axis=0)
    safe = np.where(norms > 0, norms, 1.0)
    direction = aff[:3, :3] / safe
    for i in np.flatnonzero(norms == 0):  # degenerate header: fall back to the index axis
        direction[:, i] = np.eye(3)[:, i]
    spacing = tuple(float(s) for s in safe[::-1])
    return spacing, tuple(float(o) for o in aff[:3, 3]), direction


GEOMETRY_FIX = "fix the header (e.g. with nibabel or SimpleITK) before using it"
"""What :func:`check_affine` tells a person to do with a degenerate geometry."""

_AXES = "XYZ"


def affine_problem(affine) -> str | None:
    """What makes a 4x4 RAS+ affine unusable as voxel geometry, or None if it is regular.

    Regular: finite, every voxel axis (column X, Y, Z of ``affine[:3, :3]``) of non-zero length,
    and the axes not parallel or coplanar. Singularity is judged on the unit axis directions
    (``|det(direction)| > 1e-6``), so tiny but regular voxels (1 um) pass.
    """
    aff = np.asarray(affine, float)
    if aff.shape != (4, 4):
        return f"has shape {aff.shape}, not 4x4"
    if not np.all(np.isfinite(aff)):
        return "is not finite (it holds NaN or Inf)"
    m = aff[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    zero = [_AXES[i] for i in np.flatnonzero(norms == 0)]
    if zero:
        which = {1: "axis {} has", 2: "axes {} and {} have", 3: "axes {}, {} and {} have"}
        return (f"is singular (determinant 0): voxel {which[len(zero)].format(*zero)} zero "
                f"length (zero spacing)")
    unit = m / norms
    if abs(np.linalg.det(unit)) > 1e-6:
        return None
    det = np.linalg.det(m)
    det_text = "0" if abs(det) < 1e-12 else f"{det:.3g}, nearly 0"
    for i, j in ((0, 1), (0, 2), (1, 2)):
        if abs(float(unit[:, i] @ unit[:, j])) > 1 - 1e-9:
            return (f"is singular (determinant {det_text}): voxel axes {_AXES[i]} and "
                    f"{_AXES[j]} point along the same line")
    return f"is singular (determinant {det_text}): its voxel axes X, Y, Z lie in one plane"


def check_affine(path, affine, where: str = "its affine") -> None:
    """InputError naming ``path`` unless ``affine`` (4x4 RAS+) is regular (see
    :func:`affine_problem`); ``where`` names the header fields it came from. Readers call this
    so a zero or singular geometry is never copied silently into :class:`Meta`."""
    problem = affine_problem(affine)
    if problem is not None:
        raise InputError(f"{path}: {where} {problem}; {GEOMETRY_FIX}.")


def itk_to_affine(origin, spacing, direction) -> np.ndarray:
    """RAS+ 4x4 affine from ITK (LPS) geometry of any dimension; extra axes are ignored."""
    dim = len(spacing)
    d = np.asarray(direction, float).reshape(dim, dim)
    lps = np.eye(4)
    n = min(dim, 3)
    lps[:n, :n] = d[:n, :n] @ np.diag(np.asarray(spacing, float)[:n])
    lps[:n, 3] = np.asarray(origin, float)[:n]
    return LPS_TO_RAS @ lps


def affine_to_itk(affine: np.ndarray) -> dict:
    """3D ITK (LPS) ``{"origin", "spacing", "direction"}`` tuples of a 4x4 RAS+ affine."""
    lps = LPS_TO_RAS @ np.asarray(affine, float)
    spacing_zyx, origin, direction = decompose_affine(lps)
    return {
        "origin": tuple(origin),
        "spacing": tuple(spacing_zyx[::-1]),
        "direction": tuple(float(v) for v in direction.ravel()),
    }


def check_pair(image: Image, label: Label, *, geometry: bool = True, atol: float = 1e-3) -> None:
    """Raise :class:`InputError` naming both files unless image and label match voxel for voxel.

    Spatial shapes ``image.array.shape[1:]`` and ``label.array.shape`` (both ``(Z, Y, X)``) must be
    equal. With ``geometry=True`` and both affines known, the affines must agree within ``atol`` mm;
    the message then states what differs: both spacings ``(z, y, x)`` in mm and their ratio,
    both origins ``(x, y, z)`` in mm, and the angle between the axis directions.
    """
    a, b = image.meta.source, label.meta.source
    if tuple(image.array.shape[1:]) != tuple(label.array.shape):
        raise InputError(
            f"image {a} has spatial shape (Z, Y, X) {tuple(image.array.shape[1:])} but mask {b} "
            f"has {tuple(label.array.shape)}: they are not a pair. Check the file names, or "
            f"resample the mask onto the image's grid with nearest neighbour (never linear) "
            f"interpolation (in Python: medseg.io.resize_label)."
        )
    ia, la = image.meta.affine, label.meta.affine
    if geometry and ia is not None and la is not None and not np.allclose(ia, la, atol=atol):
        raise InputError(
            f"image {a} and mask {b} have the same shape (Z, Y, X) {tuple(label.array.shape)} "
            f"but different world geometry: {geometry_difference(ia, la, atol)}. The mask does "
            f"not lie on the image's voxels: resample the mask onto the image's grid (nearest "
            f"neighbour), or re-export it from the image it was drawn on."
        )


def _mm(values) -> str:
    """'(0.625, 0.625, 1.25)': a tuple printed with 4 significant digits."""
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def geometry_difference(image_affine, mask_affine, atol: float = 1e-3) -> str:
    """What differs between two 4x4 RAS+ affines, for a person: both spacings ``(z, y, x)`` mm
    with the per-axis mask / image ratio, both origins ``(x, y, z)`` mm, and the largest angle
    between corresponding axis directions. Only the parts that differ (beyond ``atol``) are
    listed."""
    si, oi, di = decompose_affine(image_affine)
    sm, om, dm = decompose_affine(mask_affine)
    parts = []
    if not np.allclose(si, sm, atol=atol):
        ratio = np.asarray(sm) / np.asarray(si)
        parts.append(f"image spacing (z, y, x) {_mm(si)} mm, mask spacing (z, y, x) {_mm(sm)} mm "
                     f"(mask / image ratio {_mm(ratio)})")
    if not np.allclose(oi, om, atol=atol):
        parts.append(f"image origin (x, y, z) {_mm(oi)} mm, mask origin (x, y, z) {_mm(om)} mm")
    cosines = np.clip(np.sum(np.asarray(di) * np.asarray(dm), axis=0), -1.0, 1.0)
    angle = float(np.degrees(np.arccos(cosines)).max())
    if angle > 1e-3:
        parts.append(f"axis directions differ by up to {angle:.3g} degrees")
    if not parts:  # differences below atol in each part, over it in the affine as a whole
        diff = float(np.abs(np.asarray(image_affine) - np.asarray(mask_affine)).max())
        parts.append(f"affines differ by up to {diff:.4g}")
    return "; ".join(parts)


def resize_label(label_array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map (any number of axes, e.g. ``(Z, Y, X)``).

    Each output voxel takes the value of the input voxel whose centre is nearest to its own, so no
    new label values ever appear. There is deliberately no linear path for labels.
    """
    arr = np.asarray(label_array)
    if len(shape) != arr.ndim:
        raise InputError(f"resize_label: shape {tuple(shape)} has {len(shape)} axes, "
                         f"the label has {arr.ndim} {arr.shape}; give one size per axis.")
    if any(int(s) < 1 for s in shape):
        raise InputError(f"resize_label: every size must be >= 1, got {tuple(shape)}.")
    index = []
    for n_in, n_out in zip(arr.shape, shape):
        centres = (np.arange(int(n_out)) + 0.5) * (n_in / int(n_out))
        index.append(np.clip(np.floor(centres).astype(np.intp), 0, n_in - 1))
    return arr[np.ix_(*index)]
