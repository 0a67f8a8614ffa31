"""``write_label`` and ``write_image``: PNG for 2D, NIfTI/MHA/NRRD keeping ``like``'s geometry.

Safety rules shared by both: an existing file is replaced only with ``overwrite=True``; the file
(or DICOM folder) that ``like.source`` names is never written over, whatever ``overwrite`` says;
parent folders are created; the file is written to a temporary name and moved into place, so a
failed write leaves no half-written output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.formats import WRITE_SUFFIXES
from medseg.io._util import atomic_write, check_finite, full_suffix, output_path, smallest_int
from medseg.io.meta import Image, Label, Meta
from medseg.io.pictures import write_png
from medseg.io.volumes import write_itk, write_nifti

"""Suffixes :func:`write_label` / :func:`write_image` can write."""


def _suffix(path: Path) -> str:
    suffix = full_suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"{path}: cannot write {suffix or '(no suffix)'!r} files; use one of "
                         f"{', '.join(WRITE_SUFFIXES)}.")
    return suffix


def _check_like_shape(path: Path, shape: tuple, like: Meta | None) -> None:
    """The geometry of ``like`` only applies to an array of the same spatial shape."""
    if like is not None and like.shape is not None and tuple(like.shape) != tuple(shape):
        raise InputError(
            f"{path}: the array has spatial shape (Z, Y, X) {tuple(shape)} but like "
            f"({like.source}) has {tuple(like.shape)}, so its geometry does not apply; resample "
            f"the array onto like's grid first (nearest neighbour for labels), or pass like=None."
        )


def write_label(array, path, like: Meta | None = None, overwrite: bool = False) -> Path:
    """Write a label map and return the path written.

    ``array``: integer (or bool, or integral float) of shape ``(Z, Y, X)`` or ``(Y, X)``, or a
    :class:`Label` (whose meta is then the default ``like``). Values are stored in the smallest of
    uint8/uint16/int16/int32 that holds them.

    * ``.png`` (2D only, ``Z == 1``): uint8, or uint16 if a value exceeds 255; values must be
      within 0..65535.
    * ``.nii``/``.nii.gz``: with a NIfTI ``like`` the header geometry is kept exactly (affine,
      qform/sform and their codes, zooms, qfac, units); with an MHA/NRRD/DICOM ``like`` its
      affine is used; without ``like`` the identity.
    * ``.mha``/``.nrrd``: ``like``'s exact ITK origin/spacing/direction (or its affine in LPS).
    """
    if isinstance(array, Label):
        like = array.meta if like is None else like
        array = array.array
    arr = np.asarray(array)
    p = output_path(path, like.source if like is not None else None, overwrite)
    suffix = _suffix(p)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{p}: a label must have shape (Z, Y, X) or (Y, X), got {arr.shape}.")
    arr = smallest_int(arr, "the label to write")
    _check_like_shape(p, arr.shape, like)
    if suffix == ".png":
        if arr.shape[0] != 1:
            raise InputError(f"{p}: PNG holds one 2D slice but the label has Z={arr.shape[0]} "
                             f"slices; write 3D labels as .nii.gz, .mha or .nrrd.")
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise InputError(f"{p}: PNG labels must lie in 0..65535, got [{lo}, {hi}]; use "
                             f".nii.gz, or relabel with small non-negative class ids.")
        out = arr[0].astype(np.uint8 if hi <= 255 else np.uint16)
        return atomic_write(p, lambda tmp: write_png(tmp, out))
    return _write_volume(p, suffix, arr, like)


def write_image(image, path, like: Meta | None = None, overwrite: bool = False) -> Path:
    """Write an intensity image and return the path written.

    ``image``: an :class:`Image` (its meta is then the default ``like``) or an array of shape
    ``(C, Z, Y, X)``, ``(Z, Y, X)`` or ``(Y, X)``; NaN/Inf are refused.

    * ``.png`` (``Z == 1``): grey (C=1) uint8 or uint16, or RGB (C=3) uint8; bool becomes 0/255.
      Convert other dtypes first (e.g. ``np.clip(x, 0, 255).astype(np.uint8)``).
    * ``.nii``/``.nii.gz``/``.mha``/``.nrrd``: any numeric dtype, geometry as in
      :func:`write_label`; C > 1 is stored as a 4th NIfTI axis / an ITK vector image.
    """
    if isinstance(image, Image):
        like = image.meta if like is None else like
        image = image.array
    arr = np.asarray(image)
    p = output_path(path, like.source if like is not None else None, overwrite)
    suffix = _suffix(p)
    while arr.ndim < 4:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError(f"{p}: an image must have shape (C, Z, Y, X), (Z, Y, X) or (Y, X), "
                         f"got {arr.shape}.")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{p}: cannot write an image of dtype {arr.dtype}; use a numeric one.")
    check_finite(p, arr)
    _check_like_shape(p, arr.shape[1:], like)
    if suffix == ".png":
        return atomic_write(p, lambda tmp: write_png(tmp, _png_picture(p, arr)))
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    return _write_volume(p, suffix, arr, like)


def _png_picture(p: Path, arr: np.ndarray) -> np.ndarray:
    """``(Y, X)`` or ``(Y, X, 3)`` array Pillow can save, from ``(C, 1, Y, X)``."""
    c, z = arr.shape[:2]
    if z != 1:
        raise InputError(f"{p}: PNG holds one 2D slice but the image has Z={z}; write .nii.gz.")
    if c not in (1, 3):
        raise InputError(f"{p}: PNG images need C=1 (grey) or C=3 (RGB), got C={c}.")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8) * np.uint8(255)
    ok = arr.dtype == np.uint8 or (arr.dtype == np.uint16 and c == 1)
    if not ok:
        raise InputError(f"{p}: PNG images must be uint8 (or uint16 grey), got {arr.dtype} with "
                         f"C={c}; convert first, e.g. np.clip(x, 0, 255).astype(np.uint8).")
    return arr[0, 0] if c == 1 else np.moveaxis(arr[:, 0], 0, -1)


def _write_volume(p: Path, suffix: str, arr: np.ndarray, like: Meta | None) -> Path:
    if suffix in (".nii", ".nii.gz"):
        return atomic_write(p, lambda tmp: write_nifti(tmp, arr, like))
    return atomic_write(p, lambda tmp: write_itk(tmp, arr, like))
