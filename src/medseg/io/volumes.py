"""Volumes with world geometry: NIfTI (nibabel) and MHA/MHD/NRRD/NHDR (SimpleITK).

Readers return ``(array, meta)`` with ``array`` of shape ``(C, Z, Y, X)``. nibabel stores data as
``(X, Y, Z[, T, ...])`` and SimpleITK's numpy view is ``([T,] Z, Y, X[, components])``; both are
reordered here. A 4th (time/vector) axis becomes C. Writers take ``(Z, Y, X)`` or ``(C, Z, Y, X)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io._util import check_voxels, dtype_name, native, reading
from medseg.io.meta import (GEOMETRY_FIX, Meta, affine_problem, affine_to_itk, check_affine,
                            decompose_affine, itk_to_affine)

# Raw header fields that define NIfTI geometry; copied verbatim when writing with a NIfTI `like`.
_NIFTI_GEOMETRY = ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                   "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z")


def read_nifti(path: Path, max_voxels: int | None) -> tuple[np.ndarray, Meta]:
    """Read ``.nii``/``.nii.gz`` into ``(C, Z, Y, X)``; the header shape is checked first.

    scl_slope/scl_inter are applied (giving float32). ``meta.affine`` is nibabel's best affine
    (sform if its code > 0, else qform), which is RAS+ by the NIfTI standard; a zero, singular
    or non-finite one is an InputError. An RGB24 / RGBA32 file (one record of colour fields per
    voxel) gives C = 3 channels, alpha dropped as for pictures.
    """
    import nibabel as nib  # imported when a NIfTI is first read or written (not at start-up)

    with reading(path, "NIfTI"):
        img = nib.load(str(path), mmap=False)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path}: not a NIfTI-1/2 image ({type(img).__name__}); "
                             f"convert it to .nii.gz.")
        header = img.header.copy()
        stored = header.get_data_dtype()
        fields = len(stored.names) if stored.names else 1
        check_voxels(path, tuple(img.shape) + (fields,), max_voxels, "NIfTI")
        data = native(np.asanyarray(img.dataobj))
        affine = _pixdim_affine(path, header, np.array(img.affine, dtype=float))
    check_affine(path, affine, _nifti_affine_source(header))
    if data.dtype.names:
        data = _colour_channels(path, data)  # (X, Y, Z, 3)
        stored = data.dtype
    if data.dtype == np.float64 and stored != np.float64:  # scaled integers
        data = data.astype(np.float32)
    if data.ndim < 2:
        raise InputError(f"{path}: NIfTI of shape {data.shape} is not an image; check the file.")
    if data.ndim == 2:
        data = data[:, :, None]
    data = data.reshape(data.shape[:3] + (-1,))  # (X, Y, Z, C)
    arr = np.ascontiguousarray(data.transpose(3, 2, 1, 0))
    spacing, origin, direction = decompose_affine(affine)
    meta = Meta(spacing=spacing, origin=origin, direction=direction, affine=affine, source=path,
                format="nifti", dtype=dtype_name(stored), shape=tuple(arr.shape[1:]),
                _nifti_header=header)
    return arr, meta


def _pixdim_affine(path: Path, header, affine: np.ndarray) -> np.ndarray:
    """nibabel's affine, except where the sform is a unit-length placeholder that contradicts ``pixdim``
    (ACDC's files: a 1 mm sform beside pixdim 1.5625 x 1.5625 x 10 mm): then pixdim's spacing with the
    sform's directions and origin, as ITK (and so nnU-Net) reads such a file, with a warning naming the
    file. An sform with voxel sizes of its own is the standard's geometry and is kept."""
    import warnings

    if int(header["sform_code"]) <= 0 or not np.isfinite(affine).all():
        return affine
    pixdim = np.abs(np.asarray(header["pixdim"][1:4], dtype=float))
    lengths = np.linalg.norm(affine[:3, :3], axis=0)
    if (pixdim <= 0).any() or not np.isfinite(pixdim).all() or not np.allclose(lengths, 1.0, atol=1e-6) \
            or np.allclose(lengths, pixdim, rtol=1e-3, atol=1e-6):
        return affine
    fixed = affine.copy()
    fixed[:3, :3] = affine[:3, :3] / lengths * pixdim
    warnings.warn(f"{path}: the sform's voxel sizes ({', '.join(f'{v:g}' for v in lengths)} mm) contradict "
                  f"pixdim ({', '.join(f'{v:g}' for v in pixdim)} mm); using pixdim's, as ITK does. {GEOMETRY_FIX} "
                  f"if that is wrong.", stacklevel=2)
    return fixed


def _nifti_affine_source(header) -> str:
    """'its affine (the sform, sform_code 2)' ...: which header fields nibabel's affine is from;
    for a degenerate sform, whether the qform would do instead."""
    scode, qcode = int(header["sform_code"]), int(header["qform_code"])
    if scode > 0:
        where = f"its affine (the sform, sform_code {scode})"
        if qcode > 0 and _regular_qform(header):
            where = (f"{where} (its qform, qform_code {qcode}, is regular: setting sform_code "
                     f"to 0 makes readers use it)")
        return where
    if qcode > 0:
        return f"its affine (the qform, qform_code {qcode}, with pixdim)"
    return "its affine (from pixdim; qform_code and sform_code are 0)"


def _regular_qform(header) -> bool:
    """True if the header's qform can be computed and is a regular affine."""
    try:
        return affine_problem(header.get_qform()) is None
    except Exception:  # noqa: BLE001 - a bent quaternion makes nibabel raise various errors
        return False


def _colour_channels(path: Path, data: np.ndarray) -> np.ndarray:
    """``(X, Y[, Z], 3)`` plain array of an RGB24/RGBA32 record array ``(X, Y[, Z])`` (alpha,
    a field named 'A', is dropped)."""
    names = [n for n in data.dtype.names if n.upper() != "A"]
    kinds = {data.dtype.fields[n][0].kind for n in names}
    if data.ndim > 3 or not kinds <= set("iuf") or len(names) not in (1, 3):
        raise InputError(
            f"{path}: a {data.ndim}D NIfTI of colour records {data.dtype} is not supported (only "
            f"2D/3D RGB or RGBA); convert it to a plain 3D RGB or grey volume first, e.g. one "
            f"file per time point."
        )
    out = np.stack([data[n] for n in names], axis=-1)
    return out if data.ndim == 3 else out[:, :, None]


def write_nifti(path: Path, arr: np.ndarray, like: Meta | None) -> None:
    """Write ``(Z, Y, X)`` or ``(C, Z, Y, X)`` to NIfTI.

    With a NIfTI ``like``, its header is reused and the qform/sform fields and codes, pixdim
    (zooms, qfac) and units are kept byte for byte. With any other ``like`` (MHA, NRRD, DICOM),
    its RAS+ affine is stored as qform and sform with code 1 (scanner). Without ``like``, the
    identity affine. Intensity scaling and display range fields are reset.
    """
    import nibabel as nib  # imported when a NIfTI is first read or written (not at start-up)

    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    data = arr.transpose(2, 1, 0) if arr.ndim == 3 else arr.transpose(3, 2, 1, 0)
    source_hdr = like._nifti_header if like is not None else None
    if source_hdr is not None:
        hdr = source_hdr.copy()
        hdr.set_data_dtype(data.dtype)
        cls = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
        img = cls(data, hdr.get_best_affine(), header=hdr)
        out = img.header
        for key in _NIFTI_GEOMETRY:
            out[key] = source_hdr[key]
        pixdim = np.array(out["pixdim"])
        pixdim[:4] = source_hdr["pixdim"][:4]
        out["pixdim"] = pixdim
        out["xyzt_units"] = source_hdr["xyzt_units"]
    else:
        affine = like.world_affine() if like is not None else np.eye(4)
        img = nib.Nifti1Image(data, affine)
        if like is not None and (like._itk is not None or like.affine is not None):
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
        out = img.header
    out["scl_slope"], out["scl_inter"] = np.nan, np.nan
    out["cal_min"], out["cal_max"] = 0.0, 0.0
    out["intent_code"] = 0
    nib.save(img, str(path))


def read_itk(path: Path, max_voxels: int | None, fmt: str) -> tuple[np.ndarray, Meta]:
    """Read MHA/MHD/NRRD/NHDR with SimpleITK into ``(C, Z, Y, X)``; header size checked first.

    ITK geometry is LPS+; ``meta.affine`` converts it to RAS+. The exact ITK origin, spacing and
    direction are kept in ``meta._itk`` for writing back.
    """
    import SimpleITK as sitk  # heavy: imported where it is needed

    with reading(path, fmt.upper()):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        _itk_call(path, reader.ReadImageInformation)
        size, ncomp = reader.GetSize(), reader.GetNumberOfComponents()
        check_voxels(path, tuple(size) + (ncomp,), max_voxels, fmt.upper())
        if len(size) not in (2, 3, 4):
            raise InputError(f"{path}: {len(size)}D images are not supported (2D, 3D, 4D are).")
        itk = {"origin": reader.GetOrigin(), "spacing": reader.GetSpacing(),
               "direction": reader.GetDirection()}
        modality = _itk_modality(reader)
        arr = native(sitk.GetArrayFromImage(_itk_call(path, reader.Execute)))
    stored = dtype_name(arr.dtype)
    arr = np.moveaxis(arr, -1, 0) if ncomp > 1 else arr[None]  # (C, [T,] [Z,] Y, X)
    if len(size) == 2:
        arr = arr[:, None]
    elif len(size) == 4:
        arr = arr.reshape((-1,) + arr.shape[2:])
    arr = np.ascontiguousarray(arr)
    affine = itk_to_affine(**itk)
    check_affine(path, affine, "its geometry (spacing and direction)")
    spacing, origin, direction = decompose_affine(affine)
    meta = Meta(spacing=spacing, origin=origin, direction=direction, affine=affine,
                modality=modality, source=path, format=fmt, dtype=stored,
                shape=tuple(arr.shape[1:]), _itk=itk)
    return arr, meta


_ITK_GEOMETRY_ERRORS = {
    "Bad direction, determinant is 0": "its direction matrix is singular (determinant 0)",
    "Zero-valued spacing": "its spacing is zero or not a number, which makes the geometry singular",
}


def _itk_call(path: Path, step):
    """``step()`` (a reader's ReadImageInformation or Execute); ITK's refusal of a degenerate
    direction or spacing becomes an InputError that says so (rather than "corrupt file")."""
    try:
        return step()
    except RuntimeError as exc:
        for key, problem in _ITK_GEOMETRY_ERRORS.items():
            if key in str(exc):
                raise InputError(f"{path}: {problem}; {GEOMETRY_FIX}.") from exc
        raise


def _itk_modality(reader) -> str | None:
    """'CT', 'MR', ... from a MetaImage 'Modality' field (MET_MOD_CT), else None."""
    if reader.HasMetaDataKey("Modality"):
        value = reader.GetMetaData("Modality").strip()
        value = value.removeprefix("MET_MOD_")
        return value if value and value not in ("UNKNOWN", "OTHER") else None
    return None


def write_itk(path: Path, arr: np.ndarray, like: Meta | None) -> None:
    """Write ``(Z, Y, X)`` or ``(C, Z, Y, X)`` to MHA/NRRD (compressed) with ``like``'s geometry.

    An ITK ``like`` (MHA, NRRD, DICOM) gives its exact origin/spacing/direction; a NIfTI ``like``
    gives its affine converted to LPS; none gives ITK's defaults. C > 1 is a vector image.
    """
    import SimpleITK as sitk  # heavy: imported where it is needed

    vector = arr.ndim == 4 and arr.shape[0] > 1
    if arr.ndim == 4:
        arr = np.moveaxis(arr, 0, -1) if vector else arr[0]
    geo = None
    if like is not None and like._itk is not None:
        geo = like._itk
    elif like is not None and (like.affine is not None or like._nifti_header is not None):
        geo = affine_to_itk(like.world_affine())
    if geo is not None:
        dim = len(geo["spacing"])
        if dim == 2 and arr.shape[0] == 1:  # a 2D ITK image stays 2D
            arr = arr[0]
        elif dim != 3:
            geo = _itk3(geo)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=vector)
    if geo is not None:
        img.SetOrigin(tuple(geo["origin"]))
        img.SetSpacing(tuple(geo["spacing"]))
        img.SetDirection(tuple(geo["direction"]))
    sitk.WriteImage(img, str(path), True)


def _itk3(geo: dict) -> dict:
    """3D part of 2D or 4D ITK geometry (a 2D one is padded with unit spacing / identity)."""
    dim = len(geo["spacing"])
    d = np.asarray(geo["direction"], float).reshape(dim, dim)
    d3, o3, s3 = np.eye(3), np.zeros(3), np.ones(3)
    n = min(dim, 3)
    d3[:n, :n] = d[:n, :n]
    o3[:n] = np.asarray(geo["origin"], float)[:n]
    s3[:n] = np.asarray(geo["spacing"], float)[:n]
    return {"origin": tuple(o3), "spacing": tuple(s3), "direction": tuple(d3.ravel())}
