"""A minimal uncompressed single-frame MR DICOM for the I/O tests (imported by name, like
tests/evalkit.py): geometry, rescale and modality tags set, everything else left out."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def minimal_dicom(pixels: np.ndarray, *, orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0), spacing=(0.8, 0.6),
                  slope: float | None = 2.0, intercept: float = 5.0, modality: str = "MR",
                  signed: bool = True, uid_seed: str | None = None) -> Dataset:
    """A DICOM dataset of ``pixels`` (rows, columns): ImageOrientationPatient ``orientation``
    (default sagittal), PixelSpacing ``spacing`` (row spacing Y, column spacing X), position
    (10, -20, 30), slice thickness 3; rescale tags unless ``slope`` is None; a fixed UID from
    ``uid_seed`` (reproducible bytes) or a fresh one."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_seed] if uid_seed else None)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, int(signed)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.ImagePositionPatient = [10.0, -20.0, 30.0]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 3.0
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    return ds


def save_dicom(ds: Dataset, path: Path | None = None) -> Path | bytes:
    """Write ``ds`` to ``path`` (returned), or to bytes when no path is given."""
    if path is None:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
    ds.save_as(str(path), enforce_file_format=True)
    return path
