"""DICOM: one file (pydicom) or a folder holding one series (SimpleITK/GDCM, sorted by position).

Both return ``(array, meta)`` with ``array`` of shape ``(C, Z, Y, X)``: Y = Rows, X = Columns,
Z = frames (one file) or slices (series). The modality LUT (RescaleSlope/RescaleIntercept) is
applied, giving float32 for one file (e.g. CT Hounsfield units). DICOM geometry is LPS+ and is
converted to the RAS+ affine of :mod:`medseg.io.meta`; the LPS values stay in ``meta._itk``.
MONOCHROME1 pictures are returned as stored (not inverted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.formats import DICOM_SUFFIXES
from medseg.io._util import check_voxels, native, reading
from medseg.io.meta import Meta, check_affine, decompose_affine, itk_to_affine


def _pydicom():
    """pydicom and its modality-LUT function, imported when a DICOM file is first read (not at start-up)."""
    import pydicom

    try:  # pydicom >= 3
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pragma: no cover - pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return pydicom, apply_modality_lut



def is_dicom_file(path: Path) -> bool:
    """True if ``path`` has a DICOM suffix or the 'DICM' marker at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _find(ds, keyword: str):
    """Value of ``keyword`` at top level, else in the first item of a (shared, then per-frame)
    functional group sequence of an enhanced multi-frame file; None if absent."""
    if keyword in ds:
        return ds[keyword].value
    for group_seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in list(ds.get(group_seq, []))[:1]:
            for elem in group:
                if elem.VR == "SQ" and len(elem.value) and keyword in elem.value[0]:
                    return elem.value[0][keyword].value
    return None


def _geometry(ds) -> dict:
    """ITK-style LPS ``{"origin", "spacing", "direction"}`` of a DICOM file's first frame."""
    position = _find(ds, "ImagePositionPatient")
    orientation = _find(ds, "ImageOrientationPatient")
    pixel_spacing = _find(ds, "PixelSpacing")
    dz = _find(ds, "SpacingBetweenSlices") or _find(ds, "SliceThickness") or 1.0
    row = np.array([1.0, 0, 0]) if orientation is None else np.array(orientation[:3], float)
    col = np.array([0, 1.0, 0]) if orientation is None else np.array(orientation[3:6], float)
    direction = np.column_stack([row, col, np.cross(row, col)])  # columns: X, Y, Z axes
    sy, sx = (1.0, 1.0) if pixel_spacing is None else (float(v) for v in pixel_spacing[:2])
    origin = (0.0, 0.0, 0.0) if position is None else tuple(float(v) for v in position[:3])
    return {"origin": origin, "spacing": (sx, sy, float(dz)),
            "direction": tuple(float(v) for v in direction.ravel())}


def _geometry_source(ds) -> str:
    """'its geometry (ImageOrientationPatient [...], PixelSpacing [...], slice spacing ...)': the
    tags :func:`_geometry` builds the affine from, with their values, for error messages."""
    def values(keyword):
        value = _find(ds, keyword)
        if value is None:
            return "absent"
        items = [value] if isinstance(value, (int, float, str, bytes)) else list(value)
        return "[" + ", ".join(f"{float(v):g}" for v in items) + "]"

    dz = _find(ds, "SpacingBetweenSlices") or _find(ds, "SliceThickness") or 1.0
    return (f"its geometry (ImageOrientationPatient {values('ImageOrientationPatient')}, "
            f"PixelSpacing {values('PixelSpacing')}, slice spacing {float(dz):g} mm)")


def read_dicom_file(path: Path, max_voxels: int | None) -> tuple[np.ndarray, Meta]:
    """Read one DICOM file (single- or multi-frame) into ``(C, Z, Y, X)``."""
    pydicom, apply_modality_lut = _pydicom()
    with reading(path, "DICOM"):
        ds = pydicom.dcmread(str(path))
        if "PixelData" not in ds:
            raise InputError(f"{path}: this DICOM file holds no pixel data (e.g. a DICOMDIR, "
                             f"report or presentation state); pass an image file.")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        check_voxels(path, (samples, frames, int(ds.Rows), int(ds.Columns)), max_voxels, "DICOM")
        stored = f"{'int' if ds.get('PixelRepresentation', 0) else 'uint'}{ds.BitsAllocated}"
    try:
        arr = native(ds.pixel_array)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many kinds
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise InputError(
            f"{path}: cannot decode its pixel data (transfer syntax {name}): {exc}. The file may "
            f"be truncated; if it is compressed, install the decoder pydicom names (e.g. "
            f"pylibjpeg, python-gdcm) or convert it to uncompressed DICOM."
        ) from exc
    with reading(path, "DICOM"):
        if samples == 1:
            arr = np.asarray(apply_modality_lut(arr, ds))
            if arr.dtype.kind == "f":
                arr = arr.astype(np.float32)
        itk = _geometry(ds)
        where = _geometry_source(ds)
        modality = str(ds.get("Modality", "")).strip() or None
    affine = itk_to_affine(**itk)
    check_affine(path, affine, where)
    if samples > 1:  # ([F,] Y, X, S)
        arr = np.moveaxis(arr, -1, 0)
        arr = arr[:, None] if frames == 1 else arr
    else:
        arr = arr[None, None] if frames == 1 else arr[None]
    arr = np.ascontiguousarray(arr)
    spacing, origin, direction = decompose_affine(affine)
    meta = Meta(spacing=spacing, origin=origin, direction=direction, affine=affine,
                modality=modality, source=path, format="dicom", dtype=stored,
                shape=tuple(arr.shape[1:]), _itk=itk)
    return arr, meta


def read_dicom_series(folder: Path, max_voxels: int | None) -> tuple[np.ndarray, Meta]:
    """Read the one DICOM series in ``folder`` (not recursive) into ``(C, Z, Y, X)``.

    Slices are sorted by position along the slice normal by GDCM; the rescale slope/intercept is
    applied by GDCM (the dtype is then int16 or float32 depending on the tags).
    """
    import SimpleITK as sitk  # heavy: imported where it is needed

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: the folder is empty; a DICOM series folder must hold the "
                         f"DICOM files (.dcm) of one series. Check the path.")
    with reading(folder, "a DICOM series folder"):
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        kinds = sorted({p.suffix.lower() or "(no suffix)" for p in files})
        raise InputError(
            f"{folder}: the folder holds {len(files)} files ({', '.join(kinds)}) but no DICOM "
            f"series; pass a single image file instead, or a folder of one DICOM series."
        )
    if len(series_ids) > 1:
        raise InputError(
            f"{folder}: the folder holds {len(series_ids)} DICOM series "
            f"({', '.join(series_ids)}); put each series in a folder of its own and read one."
        )
    with reading(folder, "a DICOM series"):
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
        first = _pydicom()[0].dcmread(names[0], stop_before_pixels=True)
        samples = int(first.get("SamplesPerPixel", 1) or 1)
        check_voxels(folder, (samples, len(names), int(first.Rows), int(first.Columns)),
                     max_voxels, "DICOM series")
        stored = f"{'int' if first.get('PixelRepresentation', 0) else 'uint'}{first.BitsAllocated}"
        modality = str(first.get("Modality", "")).strip() or None
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(names)
        img = reader.Execute()
        itk = {"origin": img.GetOrigin(), "spacing": img.GetSpacing(),
               "direction": img.GetDirection()}
        arr = native(sitk.GetArrayFromImage(img))
    arr = np.moveaxis(arr, -1, 0) if img.GetNumberOfComponentsPerPixel() > 1 else arr[None]
    if arr.ndim == 3:  # a one-slice series read as 2D
        arr = arr[:, None]
    arr = np.ascontiguousarray(arr)
    affine = itk_to_affine(**itk)
    check_affine(folder, affine, "the series geometry (ImageOrientationPatient, PixelSpacing "
                                 "and the slice positions)")
    spacing, origin, direction = decompose_affine(affine)
    meta = Meta(spacing=spacing, origin=origin, direction=direction, affine=affine,
                modality=modality, source=folder, format="dicom-series",
                dtype=stored, shape=tuple(arr.shape[1:]), _itk=itk)
    return arr, meta
