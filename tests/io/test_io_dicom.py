"""DICOM: one file (pydicom's CT_small and one built here) and a series folder written by ITK."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk

from medseg.errors import InputError
from dicomkit import minimal_dicom, save_dicom
from pydicom.uid import generate_uid

from medseg.io import read_image, read_label, write_label

CT_SMALL = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"  # ships with pydicom


def make_dicom(path, pixels, slope=2.0, intercept=5.0, modality="MR"):
    """A minimal uncompressed single-frame DICOM with geometry and rescale tags."""
    return save_dicom(minimal_dicom(pixels, slope=slope, intercept=intercept, modality=modality), path)


def test_ct_small_modality_and_rescale():
    if not CT_SMALL.exists():
        pytest.skip("pydicom's CT_small.dcm test file is not installed")
    raw = pydicom.dcmread(str(CT_SMALL))
    img = read_image(CT_SMALL)
    assert img.meta.modality == "CT" and img.meta.format == "dicom"
    assert img.array.shape == (1, 1, 128, 128) and img.array.dtype == np.float32
    expected = raw.pixel_array * float(raw.RescaleSlope) + float(raw.RescaleIntercept)
    np.testing.assert_array_equal(img.array[0, 0], expected)
    assert float(raw.RescaleIntercept) == -1024.0  # so the rescale really shifted the values
    np.testing.assert_allclose(img.meta.spacing, (5.0, 0.661468, 0.661468))
    # LPS ImagePositionPatient -> RAS origin: x and y negated
    lps = [float(v) for v in raw.ImagePositionPatient]
    np.testing.assert_allclose(img.meta.origin, (-lps[0], -lps[1], lps[2]))
    assert read_image(CT_SMALL, modality="MR").meta.modality == "MR"


def test_built_dicom_geometry_and_rescale(tmp_path):
    pixels = np.arange(6 * 7, dtype=np.int16).reshape(6, 7)
    path = make_dicom(tmp_path / "slice.dcm", pixels)
    img = read_image(path)
    assert img.meta.modality == "MR" and img.meta.dtype == "int16"
    np.testing.assert_array_equal(img.array[0, 0], pixels * 2.0 + 5.0)
    assert img.meta.spacing == (3.0, 0.8, 0.6)
    # column direction (X) is LPS +y = RAS -y; row direction (Y) is LPS -z = RAS -z
    np.testing.assert_allclose(img.meta.direction[:, 0], (0, -1, 0), atol=1e-12)
    np.testing.assert_allclose(img.meta.direction[:, 1], (0, 0, -1), atol=1e-12)
    np.testing.assert_allclose(img.meta.affine[:3, 3], (-10.0, 20.0, 30.0))

    out = write_label(np.ones((1, 6, 7), np.uint8), tmp_path / "lab.mha", like=img.meta)
    got = sitk.ReadImage(str(out))
    assert got.GetOrigin() == (10.0, -20.0, 30.0)
    assert got.GetSpacing() == (0.6, 0.8, 3.0)


def test_dicom_without_suffix_is_sniffed(tmp_path):
    if not CT_SMALL.exists():
        pytest.skip("pydicom's CT_small.dcm test file is not installed")
    shutil.copy(CT_SMALL, tmp_path / "IM0001")
    assert read_image(tmp_path / "IM0001").meta.modality == "CT"


def write_series(folder: Path, vol: np.ndarray, spacing, origin, direction, shuffle=True):
    """Write (Z, Y, X) int16 ``vol`` as a CT series with SimpleITK/GDCM, one file per slice."""
    folder.mkdir(parents=True, exist_ok=True)
    ref = sitk.GetImageFromArray(vol)
    ref.SetSpacing(spacing)
    ref.SetOrigin(origin)
    ref.SetDirection(direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid, study_uid = generate_uid(), generate_uid()
    d = direction
    orientation = "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    order = np.random.default_rng(3).permutation(vol.shape[0]) if shuffle else range(vol.shape[0])
    for name_index, k in enumerate(order):
        k = int(k)
        sl = ref[:, :, k]
        position = ref.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT", "0020|000e": series_uid, "0020|000d": study_uid,
            "0008|0018": generate_uid(), "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0020|0037": orientation, "0020|0013": str(k + 1),
            "0020|0032": "\\".join(str(v) for v in position),
            "0018|0050": str(spacing[2]), "0028|1053": "1", "0028|1052": "-1024",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{name_index:03d}.dcm"))  # names not in z order
        writer.Execute(sl)
    return ref


def test_dicom_series_folder(tmp_path):
    vol = (np.arange(4 * 6 * 5).reshape(4, 6, 5) * 3).astype(np.int16)
    a = 0.3
    direction = (np.cos(a), -np.sin(a), 0.0, np.sin(a), np.cos(a), 0.0, 0.0, 0.0, 1.0)
    ref = write_series(tmp_path / "series", vol, (0.7, 0.9, 2.5), (5.0, -3.0, 12.0), direction)
    img = read_image(tmp_path / "series")
    assert img.meta.format == "dicom-series" and img.meta.modality == "CT"
    assert img.array.shape == (1, 4, 6, 5)
    np.testing.assert_array_equal(img.array[0], vol)  # slices sorted by position, not name
    # GDCM stored (value - intercept); reading applied RescaleIntercept = -1024 again
    raw = pydicom.dcmread(str(tmp_path / "series" / "slice_000.dcm"))
    k = int(raw.InstanceNumber) - 1
    np.testing.assert_array_equal(raw.pixel_array - 1024, img.array[0, k])
    assert not np.array_equal(raw.pixel_array, img.array[0, k])
    np.testing.assert_allclose(img.meta.spacing, (2.5, 0.9, 0.7), rtol=1e-5)
    np.testing.assert_allclose(img.meta._itk["direction"], direction, atol=1e-5)
    np.testing.assert_allclose(img.meta.origin, (-5.0, 3.0, 12.0), atol=1e-5)

    lab = read_label(write_label(np.zeros((4, 6, 5), np.uint8), tmp_path / "l.nrrd",
                                 like=img.meta))
    np.testing.assert_allclose(lab.meta.affine, img.meta.affine, atol=1e-6)
    with pytest.raises(InputError, match="never written over inputs"):
        write_label(np.zeros((4, 6, 5), np.uint8), tmp_path / "series" / "l.nrrd",
                    like=img.meta, overwrite=True)
    del ref


def test_empty_and_non_dicom_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        read_image(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path / "notes")
