"""A zero, singular or non-finite affine / direction matrix is refused, never copied into Meta."""

import struct

import nibabel as nib
import numpy as np
import pytest
from dicomkit import minimal_dicom, save_dicom

from medseg.errors import InputError
from medseg.io import read_image, read_label
from medseg.io.meta import check_affine


def nifti_with_sform(path, sform, code=2):
    """A small NIfTI whose sform (used by nibabel when ``code`` > 0) is ``sform``."""
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.eye(4))
    img.set_qform(np.eye(4), code=1)
    img.set_sform(sform, code=code)
    nib.save(img, str(path))
    return path


def refused(path, *words):
    for read in (read_image, read_label):
        with pytest.raises(InputError) as err:
            read(path)
        msg = str(err.value)
        assert path.name in msg, msg
        for word in words:
            assert word in msg, msg
    return msg


@pytest.mark.parametrize("name", ["zero.nii.gz", "zero.nii"])
def test_nifti_zero_affine_is_refused(tmp_path, name):
    zero = np.zeros((4, 4))
    zero[3, 3] = 1
    msg = refused(nifti_with_sform(tmp_path / name, zero), "singular", "determinant 0",
                  "fix the header")
    assert "nibabel or SimpleITK" in msg


def test_nifti_collinear_axes_are_refused(tmp_path):
    aff = np.eye(4)
    aff[:3, 1] = aff[:3, 0]  # voxel axes X and Y point the same way
    refused(nifti_with_sform(tmp_path / "flat.nii.gz", aff), "singular", "fix the header")


def test_nifti_nan_affine_is_refused(tmp_path):
    path = nifti_with_sform(tmp_path / "nan.nii", np.eye(4))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 296 + 4, np.nan)  # srow_y[1]: nibabel refuses to set NaN itself
    path.write_bytes(bytes(raw))
    refused(path, "not finite", "fix the header")


def test_nifti_valid_oblique_affine_still_reads(tmp_path):
    aff = np.array([[0.0, 0.0, 2.5, 1.0], [-0.7, 0.0, 0.0, 2.0], [0.0, 0.9, 0.0, 3.0],
                    [0, 0, 0, 1]])
    img = read_image(nifti_with_sform(tmp_path / "ok.nii.gz", aff))
    np.testing.assert_allclose(img.meta.affine, aff)
    np.testing.assert_allclose(img.meta.spacing, (2.5, 0.9, 0.7))


def test_tiny_but_regular_voxels_are_accepted(tmp_path):
    """Singularity is judged on the axis directions, not the size: 1 um voxels are fine."""
    img = read_image(nifti_with_sform(tmp_path / "micro.nii.gz", np.diag([1e-3, 1e-3, 1e-3, 1])))
    np.testing.assert_allclose(img.meta.spacing, (1e-3,) * 3)


def make_dicom(path, orientation, spacing):
    return save_dicom(minimal_dicom(np.zeros((4, 5)), orientation=orientation, spacing=spacing, slope=None,
                                    signed=False), path)


@pytest.mark.parametrize("orientation,spacing,words", [
    ([1, 0, 0, 1, 0, 0], [0.8, 0.6], ("singular", "ImageOrientationPatient")),
    ([0, 0, 0, 0, 0, 0], [0.8, 0.6], ("singular", "ImageOrientationPatient")),
    ([1, 0, 0, 0, 1, 0], [0.0, 0.0], ("singular", "PixelSpacing")),
])
def test_dicom_degenerate_geometry_is_refused(tmp_path, orientation, spacing, words):
    path = make_dicom(tmp_path / "bad.dcm", orientation, spacing)
    refused(path, *words, "fix the header")


def test_dicom_regular_geometry_still_reads(tmp_path):
    img = read_image(make_dicom(tmp_path / "ok.dcm", [0, 1, 0, 0, 0, -1], [0.8, 0.6]))
    assert img.meta.spacing == (3.0, 0.8, 0.6)
    assert abs(np.linalg.det(img.meta.direction)) == pytest.approx(1.0)


@pytest.mark.parametrize("suffix,good,bad", [
    (".mha", b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 1 0 0 0 0 1"),
    (".mha", b"ElementSpacing = 1 1 1", b"ElementSpacing = 0 1 1"),
    (".nrrd", b"(1,0,0) (0,1,0)", b"(1,0,0) (1,0,0)"),
])
def test_itk_degenerate_geometry_says_what_is_wrong(tmp_path, suffix, good, bad):
    import SimpleITK as sitk

    path = tmp_path / f"v{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(path), False)
    raw = path.read_bytes()
    assert good in raw
    path.write_bytes(raw.replace(good, bad))
    msg = refused(path, "fix the header")
    assert "singular" in msg or "zero spacing" in msg, msg
    assert "truncated" not in msg, msg  # not the generic corrupt-file message


def test_check_affine_accepts_regular_and_refuses_degenerate(tmp_path):
    check_affine(tmp_path / "x.nii", np.diag([0.5, 2.0, 3.0, 1.0]))
    for bad in (np.zeros((4, 4)), np.diag([1.0, 1.0, 0.0, 1.0]), np.full((4, 4), np.inf)):
        with pytest.raises(InputError, match="x.nii"):
            check_affine(tmp_path / "x.nii", bad)


def test_nifti_unit_sform_placeholder_takes_pixdim_as_itk_does(tmp_path):
    """ACDC's files: sform_code 2 with a 1 mm sform, the real voxel size (1.5625 x 1.5625 x 10 mm) in
    pixdim. Read as ITK reads them (pixdim's spacing, the sform's directions), with a warning naming the
    file; a label written like it reads back on the same grid."""
    from medseg.io import write_label

    img = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), np.eye(4))
    img.header["qform_code"] = 0
    img.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)
    img.header.set_zooms((1.5625, 1.5625, 10.0))
    path = tmp_path / "acdc_like.nii.gz"
    nib.save(img, str(path))
    with pytest.warns(UserWarning, match="acdc_like.nii.gz.*contradict pixdim"):
        image = read_image(path)
    np.testing.assert_allclose(image.meta.spacing, (10.0, 1.5625, 1.5625))
    np.testing.assert_allclose(image.meta.affine[:3, :3], np.diag([-1.5625, -1.5625, 10.0]))
    out = tmp_path / "label.nii.gz"
    write_label(np.ones(image.spatial_shape, np.uint8), out, like=image.meta)
    with pytest.warns(UserWarning):
        label = read_label(out)
    np.testing.assert_allclose(label.meta.affine, image.meta.affine)
