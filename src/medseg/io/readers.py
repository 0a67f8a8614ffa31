"""``read_image`` and ``read_label``: one entry point for every supported format.

Dispatch is on the file suffix (see :data:`SUPPORTED_SUFFIXES`); a suffix-less file is read as
DICOM if it carries the 'DICM' marker; a folder is read as one DICOM series.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io._util import DEFAULT_MAX_VOXELS, check_finite, check_numeric, existing_path
from medseg.io._util import full_suffix, smallest_int
from medseg.formats import DICOM_SUFFIXES, READ_SUFFIXES
from medseg.io.dicom import is_dicom_file, read_dicom_file, read_dicom_series
from medseg.io.meta import Image, Label, Meta
from medseg.io.pictures import read_pil, read_tiff
from medseg.io.volumes import read_itk, read_nifti

_KINDS = {
    ".png": "pil", ".jpg": "pil", ".jpeg": "pil", ".bmp": "pil",
    ".tif": "tiff", ".tiff": "tiff",
    ".nii": "nifti", ".nii.gz": "nifti",
    ".mha": "mha", ".mhd": "mha", ".nrrd": "nrrd", ".nhdr": "nrrd",
    **{suffix: "dicom" for suffix in DICOM_SUFFIXES},
}
SUPPORTED_SUFFIXES: tuple[str, ...] = READ_SUFFIXES
assert set(_KINDS) == set(READ_SUFFIXES), "a suffix of medseg.formats without a reader"
"""Suffixes :func:`read_image` / :func:`read_label` accept; also a folder (DICOM series) and a
suffix-less DICOM file."""


def _kind(path: Path) -> str:
    if path.is_dir():
        return "dicom-series"
    suffix = full_suffix(path)
    if suffix in _KINDS:
        return _KINDS[suffix]
    if (suffix == "" or suffix.lstrip(".").isdigit()) and is_dicom_file(path):
        return "dicom"
    hint = " (only .nii.gz is read compressed; decompress others)" if suffix.endswith(".gz") else ""
    raise InputError(
        f"{path}: unsupported file type {suffix or '(no suffix)'!r}{hint}. Supported: "
        f"{', '.join(SUPPORTED_SUFFIXES)}, a DICOM file without suffix, or a folder holding "
        f"one DICOM series. Convert the file to one of these."
    )


def _load(path, max_voxels: int | None, as_label: bool) -> tuple[np.ndarray, Meta]:
    """``(array (C, Z, Y, X), meta)`` of any supported file or DICOM folder; the array is plain
    numbers (bool, integer or float), else InputError."""
    p = existing_path(path)
    arr, meta = _read(p, _kind(p), max_voxels, as_label)
    check_numeric(meta.source, arr)
    return arr, meta


def _read(p: Path, kind: str, max_voxels: int | None, as_label: bool) -> tuple[np.ndarray, Meta]:
    if kind == "pil":
        return read_pil(p, max_voxels, as_label)
    if kind == "tiff":
        return read_tiff(p, max_voxels, as_label)
    if kind == "nifti":
        return read_nifti(p, max_voxels)
    if kind in ("mha", "nrrd"):
        return read_itk(p, max_voxels, kind)
    if kind == "dicom":
        return read_dicom_file(p, max_voxels)
    return read_dicom_series(p, max_voxels)


def read_image(path, modality: str | None = None, *,
               max_voxels: int | None = DEFAULT_MAX_VOXELS) -> Image:
    """Read an intensity image as :class:`Image` with ``array`` of shape ``(C, Z, Y, X)``.

    ``modality`` ("CT", "MR", ...) sets ``meta.modality``, overriding what the file says (DICOM
    Modality tag); without it, the file's own value or None. ``max_voxels`` limits the elements
    (voxels x channels) a header may declare, checked before any pixel data is decoded (None:
    no limit). Raises :class:`InputError` (naming the file and what to do) for a missing,
    unreadable, truncated, oversized or unsupported file, and for NaN/Inf voxels.
    """
    arr, meta = _load(path, max_voxels, as_label=False)
    check_finite(meta.source, arr)
    if modality is not None:
        meta.modality = str(modality)
    return Image(array=arr, meta=meta)


def read_label(path, *, max_voxels: int | None = DEFAULT_MAX_VOXELS) -> Label:
    """Read a label map as :class:`Label` with an integer ``array`` of shape ``(Z, Y, X)``.

    Integer files keep their dtype; float files with integral values become the smallest of
    uint8/uint16/int16/int32. An RGB/RGBA mask whose colour channels are equal is reduced to one
    channel (alpha is ignored); a palette PNG gives its palette indices. Raises
    :class:`InputError` for non-integer values (soft maps), colour masks with differing
    channels, and every bad-file case of :func:`read_image`.
    """
    arr, meta = _load(path, max_voxels, as_label=True)
    source = meta.source
    if arr.shape[0] > 1:
        if not all(np.array_equal(arr[0], arr[c]) for c in range(1, arr.shape[0])):
            raise InputError(
                f"{source}: a label must have one value per voxel, but this file has "
                f"{arr.shape[0]} channels that differ (a colour mask or multi-channel image); "
                f"convert it to a map of integer class ids (0 = background)."
            )
    arr = arr[0]
    if arr.dtype.kind in "iu":
        label = arr
    else:
        label = smallest_int(arr, "a label", source)
    return Label(array=np.ascontiguousarray(label), meta=meta)
