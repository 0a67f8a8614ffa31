"""DICOM-SEG out: a label map over a DICOM file or series -> a highdicom Segmentation.

The label's slice ``z`` is the source slice GDCM sorted to ``z`` when the series was read
(:func:`medseg.io.dicom.read_dicom_series`: ascending position along the slice normal), so the
frames reference the right source instances. highdicom is an optional extra (``medseg[serve]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .dicom import is_dicom_file

SEGMENT_ALGORITHM = "medseg"


def source_datasets(source: Path) -> list:
    """The pydicom datasets of a DICOM file or series folder, in the order the series reader puts
    its slices (position along the slice normal, ascending)."""
    import pydicom

    files = [source] if source.is_file() else sorted(
        p for p in source.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom_file(p))
    if not files:
        raise InputError(f"{source}: no DICOM files to reference; DICOM-SEG needs a DICOM input.")
    datasets = [pydicom.dcmread(str(p)) for p in files]
    if len(datasets) > 1:
        normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
        datasets.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    return datasets


def dicom_seg_bytes(label: np.ndarray, source: Path, names: dict[int, str] | None = None,
                    series_description: str = "medseg segmentation") -> bytes:
    """label: integer (Z, Y, X) over the DICOM input ``source`` (file or series folder) -> the bytes of
    a binary DICOM Segmentation with one segment per non-zero class (``names[k]``, default "object
    k"), referencing the source series. An empty label map is an InputError (DICOM-SEG needs a
    segment)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.filebase import DicomBytesIO

    sources = source_datasets(Path(source))
    label = np.asarray(label)
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    if label.shape != (len(sources), rows, cols):
        raise InputError(f"{source}: the label map has shape {label.shape} (Z, Y, X) but the DICOM input has "
                         f"{len(sources)} slice(s) of {rows}x{cols}; export the label of this image.")
    classes = [int(k) for k in np.unique(label) if k != 0]
    if not classes:
        raise InputError(f"{source}: the label map is empty; segment an object before exporting DICOM-SEG.")
    names = names or {}
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=str(names.get(k, f"object {k}"))[:64],
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=SEGMENT_ALGORITHM, version=_version(), family=codes.cid7162.ArtificialIntelligence))
        for i, k in enumerate(classes)]
    stack = np.stack([label == k for k in classes], axis=-1).astype(np.uint8)  # (Z, Y, X, S)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=stack, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medseg",
            manufacturer_model_name="medseg", software_versions=_version(), device_serial_number="0",
            series_description=series_description, omit_empty_frames=False)
    except (ValueError, AttributeError, TypeError) as error:
        raise InputError(f"{source}: DICOM-SEG cannot reference this input ({error}); the source needs the "
                         f"patient, study and series attributes of a clinical DICOM export.") from None
    buffer = DicomBytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medseg")
    except PackageNotFoundError:
        return "unknown"
