"""NIfTI (nibabel) and MHA/NRRD (SimpleITK): axis order and geometry kept exactly on write."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import InputError
from medseg.io import read_image, read_label, write_image, write_label

RNG = np.random.default_rng(1)
NIFTI_GEOMETRY = ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x",
                  "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "pixdim", "xyzt_units")


def rotated_affine():
    """A rotation about two axes, non-unit anisotropic spacing and an offset origin."""
    a, b = 0.3, -0.2
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([0.7, 0.9, 2.5])
    aff[:3, 3] = [-10.5, 20.25, 33.0]
    return aff


def make_nifti(path, data, qcode=1, scode=2):
    aff = rotated_affine()
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=qcode)
    img.set_sform(aff, code=scode)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("name", ["vol.nii.gz", "vol.nii"])
def test_nifti_axis_order_and_geometry_round_trip(tmp_path, name):
    data = RNG.normal(size=(6, 7, 8)).astype(np.float32)  # nibabel (X, Y, Z)
    src = make_nifti(tmp_path / name, data)
    img = read_image(src)
    assert img.array.shape == (1, 8, 7, 6)  # (C, Z, Y, X)
    np.testing.assert_array_equal(img.array[0], data.transpose(2, 1, 0))
    np.testing.assert_allclose(img.meta.spacing, (2.5, 0.9, 0.7), rtol=1e-6)
    np.testing.assert_allclose(img.meta.affine, nib.load(str(src)).affine)
    np.testing.assert_allclose(img.meta.origin, (-10.5, 20.25, 33.0))
    assert img.meta.format == "nifti" and img.meta.dtype == "float32"
    # (i, j, k) voxel index -> world: affine @ (x, y, z, 1) addresses array[..., z, y, x]
    np.testing.assert_allclose(img.meta.world_affine(), img.meta.affine)

    label = (img.array[0] > 0).astype(np.uint8)
    out = write_label(label, tmp_path / "out" / name, like=img.meta)
    h_in, h_out = nib.load(str(src)).header, nib.load(str(out)).header
    for key in NIFTI_GEOMETRY:
        assert h_in[key].tobytes() == h_out[key].tobytes(), key
    np.testing.assert_array_equal(nib.load(str(out)).affine, nib.load(str(src)).affine)
    assert h_out.get_data_dtype() == np.uint8
    back = read_label(out)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, label)


def test_nifti_qform_only_keeps_codes(tmp_path):
    src = make_nifti(tmp_path / "q.nii.gz", np.zeros((4, 5, 6), np.int16), qcode=1, scode=0)
    img = read_image(src)
    out = write_label(np.ones((6, 5, 4), np.uint8), tmp_path / "q_lab.nii.gz", like=img.meta)
    h_in, h_out = nib.load(str(src)).header, nib.load(str(out)).header
    assert int(h_out["sform_code"]) == 0 and int(h_out["qform_code"]) == 1
    for key in NIFTI_GEOMETRY:
        assert h_in[key].tobytes() == h_out[key].tobytes(), key


def test_nifti_scaling_applied_and_4d_is_channels(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    got = read_image(tmp_path / "s.nii.gz")
    assert got.array.dtype == np.float32 and got.meta.dtype == "int16"
    np.testing.assert_allclose(got.array[0], data.transpose(2, 1, 0) * 0.5 - 3.0)

    four = RNG.normal(size=(3, 4, 5, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(four, np.eye(4)), str(tmp_path / "c.nii.gz"))
    got = read_image(tmp_path / "c.nii.gz")
    assert got.array.shape == (2, 5, 4, 3)
    np.testing.assert_array_equal(got.array, four.transpose(3, 2, 1, 0))
    back = read_image(write_image(got, tmp_path / "c_out.nii.gz"))
    np.testing.assert_array_equal(back.array, got.array)


def test_float_nifti_label_with_integer_values_becomes_integer(tmp_path):
    lab = RNG.integers(0, 3, (4, 5, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / "lab.nii.gz"))
    got = read_label(tmp_path / "lab.nii.gz")
    assert got.array.dtype == np.uint8 and got.array.shape == (6, 5, 4)
    np.testing.assert_array_equal(got.array, lab.transpose(2, 1, 0))
    soft = lab + 0.25
    nib.save(nib.Nifti1Image(soft, np.eye(4)), str(tmp_path / "soft.nii.gz"))
    with pytest.raises(InputError, match="soft.nii.gz"):
        read_label(tmp_path / "soft.nii.gz")


def make_itk(path, dtype=np.int16):
    arr = RNG.integers(-50, 50, (4, 5, 6)).astype(dtype)  # SimpleITK view: (Z, Y, X)
    img = sitk.GetImageFromArray(arr)
    a = 0.4
    img.SetDirection((np.cos(a), -np.sin(a), 0.0, np.sin(a), np.cos(a), 0.0, 0.0, 0.0, 1.0))
    img.SetOrigin((1.123456789, -2.5, 3.3))
    img.SetSpacing((0.3333333, 1.7, 2.9))
    sitk.WriteImage(img, str(path))
    return arr, img


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_geometry_round_trip(tmp_path, suffix):
    arr, ref = make_itk(tmp_path / f"v{suffix}")
    img = read_image(tmp_path / f"v{suffix}")
    assert img.array.shape == (1, 4, 5, 6) and img.array.dtype == np.int16
    np.testing.assert_array_equal(img.array[0], arr)
    assert img.meta.spacing == (2.9, 1.7, 0.3333333)
    # LPS origin (1.12, -2.5, 3.3) is RAS (-1.12, 2.5, 3.3)
    np.testing.assert_allclose(img.meta.origin, (-1.123456789, 2.5, 3.3))
    np.testing.assert_allclose(img.meta.affine[:3, 3], img.meta.origin)

    label = (arr > 0).astype(np.uint8)
    out = write_label(label, tmp_path / "o" / f"lab{suffix}", like=img.meta)
    got = sitk.ReadImage(str(out))
    assert got.GetOrigin() == ref.GetOrigin()
    assert got.GetSpacing() == ref.GetSpacing()
    assert got.GetDirection() == ref.GetDirection()
    back = read_label(out)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, label)


def test_geometry_crosses_formats(tmp_path):
    make_itk(tmp_path / "v.mha")
    img = read_image(tmp_path / "v.mha")
    lab = np.zeros(img.spatial_shape, np.uint8)
    as_nifti = read_label(write_label(lab, tmp_path / "l.nii.gz", like=img.meta))
    np.testing.assert_allclose(as_nifti.meta.affine, img.meta.affine, atol=1e-5)
    hdr = nib.load(str(tmp_path / "l.nii.gz")).header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1

    src = make_nifti(tmp_path / "n.nii.gz", np.zeros((6, 7, 8), np.float32))
    nimg = read_image(src)
    as_mha = read_label(write_label(np.zeros((8, 7, 6), np.uint8), tmp_path / "l.nrrd",
                                    like=nimg.meta))
    np.testing.assert_allclose(as_mha.meta.affine, nimg.meta.affine, atol=1e-5)


def test_write_label_needs_like_shape(tmp_path):
    make_itk(tmp_path / "v.mha")
    img = read_image(tmp_path / "v.mha")
    with pytest.raises(InputError, match="like"):
        write_label(np.zeros((3, 3, 3), np.uint8), tmp_path / "bad.mha", like=img.meta)


def test_vector_mha_is_channels(tmp_path):
    arr = RNG.normal(size=(3, 4, 5, 2)).astype(np.float32)  # (Z, Y, X, components)
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=True), str(tmp_path / "vec.mha"))
    img = read_image(tmp_path / "vec.mha")
    assert img.array.shape == (2, 3, 4, 5)
    back = read_image(write_image(img, tmp_path / "vec_out.mha"))
    np.testing.assert_array_equal(back.array, img.array)


def test_2d_mha_stays_2d_and_modality_tag(tmp_path):
    arr = RNG.integers(0, 9, (7, 8)).astype(np.uint8)  # (Y, X)
    img2d = sitk.GetImageFromArray(arr)
    img2d.SetSpacing((0.5, 0.25))
    img2d.SetOrigin((3.0, 4.0))
    sitk.WriteImage(img2d, str(tmp_path / "flat.mha"))
    raw = (tmp_path / "flat.mha").read_bytes()  # ITK does not write Modality; add it by hand
    raw = raw.replace(b"ElementType", b"Modality = MET_MOD_CT\nElementType")
    (tmp_path / "flat.mha").write_bytes(raw)
    img = read_image(tmp_path / "flat.mha")
    assert img.array.shape == (1, 1, 7, 8) and img.meta.spacing == (1.0, 0.25, 0.5)
    assert img.meta.modality == "CT"
    out = write_label(read_label(tmp_path / "flat.mha"), tmp_path / "flat_lab.mha",
                      like=img.meta)
    got = sitk.ReadImage(str(out))
    assert got.GetDimension() == 2 and got.GetSpacing() == (0.5, 0.25)
    assert got.GetOrigin() == (3.0, 4.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), arr)
