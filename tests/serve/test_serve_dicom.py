"""DICOM in, DICOM-SEG out: a zipped series uploaded to the server, segmented, exported, and read back
with highdicom (frames on the right source instances of the referenced series)."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

highdicom = pytest.importorskip("highdicom", reason="DICOM-SEG needs the [serve] extra")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from dicomkit import minimal_dicom, save_dicom  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from medseg.errors import InputError  # noqa: E402
from medseg.io.dicomseg import dicom_seg_bytes  # noqa: E402


def clinical_series(folder: Path, depth: int = 4) -> list[str]:
    """A CT-like series of ``depth`` 32x40 slices whose file order is the reverse of their position
    order; returns the SOP instance UIDs in position order (the order medseg's reader stacks them)."""
    folder.mkdir()
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    by_position = {}
    for i in range(depth):
        pixels = (np.arange(32 * 40).reshape(32, 40) % 97 + 40 * i).astype(np.int16)
        ds = minimal_dicom(pixels, orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), spacing=(0.7, 0.7), modality="CT")
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * (depth - 1 - i)]
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series, study, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "P1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = \
            "20260101", "120000", "1", "A1", ""
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        save_dicom(ds, folder / f"slice_{i}.dcm")
        by_position[depth - 1 - i] = str(ds.SOPInstanceUID)
    return [by_position[k] for k in range(depth)]


def test_zip_upload_to_dicom_seg(client, tmp_path):
    uids = clinical_series(tmp_path / "series")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((tmp_path / "series").iterdir()):
            z.write(path, f"nested/{path.name}")
    info = client.post("/api/images", files={"file": ("ct.zip", archive.getvalue(), "application/zip")}).json()
    assert info["shape"] == [4, 32, 40] and info["modality"] == "CT" and info["dicom"] is True
    image_id = info["image_id"]
    for z, obj in ((1, 1), (2, 1), (2, 2)):
        client.post(f"/api/images/{image_id}/segment", json={"box": [4, 4, 20 + 4 * z, 24], "slice": z, "object": obj})
    labels = np.stack([np.asarray(Image.open(io.BytesIO(
        client.get(f"/api/images/{image_id}/slices/{z}/labels.png").content))) for z in range(4)])
    answer = client.get(f"/api/images/{image_id}/labels?format=dicom-seg")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/dicom"
    seg = highdicom.seg.segread(io.BytesIO(answer.content))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["object 1", "object 2"]
    referenced = seg.ReferencedSeriesSequence[0]
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(uids)
    for number, obj in ((1, 1), (2, 2)):
        for z, uid in enumerate(uids):
            frame = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=[number])[0, ..., 0]
            np.testing.assert_array_equal(frame.astype(bool), labels[z] == obj)


def test_dicom_seg_refusals(tmp_path):
    clinical_series(tmp_path / "series", depth=2)
    with pytest.raises(InputError, match="the label map is empty"):
        dicom_seg_bytes(np.zeros((2, 32, 40), np.uint8), tmp_path / "series")
    with pytest.raises(InputError, match=r"has shape \(3, 32, 40\).*2 slice\(s\) of 32x40"):
        dicom_seg_bytes(np.ones((3, 32, 40), np.uint8), tmp_path / "series")
