"""The one case type: reading a case (pairing checks), planes for the predictor, 3D cases, patches
of them, channels in several files, unlabelled images."""

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.errors import InputError
from medseg.data.cases import Case, load_case, load_image, modality_loader, plane


def test_grey_and_rgb_planes(tmp_path):
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((4, 5, 4), np.uint8), mode="RGBA").save(tmp_path / "c.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "m.png")
    grey, label = load_case(Case("case", tmp_path / "g.png", tmp_path / "m.png"))
    rgb, _ = load_case(Case("case", tmp_path / "c.png", tmp_path / "m.png"))
    assert plane(grey).shape == (4, 5) and label.array.shape == (1, 4, 5)
    assert plane(rgb).shape == (4, 5, 3)


def test_16_bit_image_keeps_its_values(tmp_path):
    Image.fromarray(np.array([[0, 1000], [2000, 4000]], np.uint16)).save(tmp_path / "d.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "m.png")
    image, _ = load_case(Case("case", tmp_path / "d.png", tmp_path / "m.png"))
    assert plane(image).tolist() == [[0, 1000], [2000, 4000]]


def test_volume_pair(tmp_path):
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), affine), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.uint8), affine), tmp_path / "l.nii.gz")
    image, label = load_case(Case("case", tmp_path / "v.nii.gz", tmp_path / "l.nii.gz"))
    assert image.array.shape == (1, 4, 5, 6) and label.array.shape == (4, 5, 6)
    assert plane(image, 2).shape == (5, 6)


def test_unreadable_and_mismatched_files_are_input_errors(tmp_path):
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(InputError, match="bad.png"):
        load_case(Case("case", tmp_path / "bad.png", tmp_path / "m.png"))
    with pytest.raises(InputError, match="big.png"):
        load_case(Case("case", tmp_path / "big.png", tmp_path / "m.png"))
    with pytest.raises(InputError, match="missing.png"):
        load_case(Case("case", tmp_path / "missing.png", tmp_path / "m.png"))


def _volume_case(tmp_path):
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    data = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)  # NIfTI (x, y, z)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image((data > 60).astype(np.uint8), affine), tmp_path / "l.nii.gz")
    return Case("vol", (tmp_path / "v.nii.gz",), tmp_path / "l.nii.gz"), data


def test_a_patch_of_a_3d_case_reads_that_region_of_image_and_mask(tmp_path):
    case, data = _volume_case(tmp_path)
    whole_image, whole_label = load_case(case)
    patch = case.cut((1, 3, 0, 4, 2, 6))  # z 1..2, y 0..3, x 2..5
    assert patch.patch == (1, 3, 0, 4, 2, 6) and case.patch is None  # the case itself is unchanged
    image, label = load_case(patch)
    assert image.array.shape == (1, 2, 4, 4) and label.array.shape == (2, 4, 4)
    np.testing.assert_array_equal(image.array, whole_image.array[:, 1:3, 0:4, 2:6])
    np.testing.assert_array_equal(label.array, whole_label.array[1:3, 0:4, 2:6])
    assert image.array[0, 0, 0, 0] == data[2, 0, 1]  # (z, y, x) of the patch = data[x, y, z]
    np.testing.assert_array_equal(load_image(patch).array, image.array)  # the image alone, the same cut
    np.testing.assert_array_equal(load_image(case).array, whole_image.array)


def test_a_patch_outside_the_case_or_empty_is_refused(tmp_path):
    case, _ = _volume_case(tmp_path)
    with pytest.raises(InputError, match="outside"):
        load_case(case.cut((0, 9, 0, 2, 0, 2)))
    with pytest.raises(InputError, match="empty"):
        case.cut((2, 2, 0, 2, 0, 2))


def test_channel_files_stack_and_unlabelled_cases_have_no_label(tmp_path):
    for c in range(2):
        Image.fromarray(np.full((4, 5), 10 * (c + 1), np.uint8)).save(tmp_path / f"x_000{c}.png")
    case = Case("x", (tmp_path / "x_0000.png", tmp_path / "x_0001.png"))
    image, label = load_case(case)
    assert label is None and image.array.shape == (2, 1, 4, 5)
    assert plane(image).shape == (4, 5, 2) and plane(image)[0, 0].tolist() == [10, 20]
    Image.fromarray(np.zeros((3, 5), np.uint8)).save(tmp_path / "x_0001.png")
    with pytest.raises(InputError, match="channel files differ"):
        load_case(case)


def test_a_modality_loader_names_the_modality_files_do_not_carry(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), np.eye(4)), tmp_path / "v.nii.gz")
    case = Case("case", tmp_path / "v.nii.gz")
    assert load_case(case)[0].meta.modality is None
    assert modality_loader("CT")(case)[0].meta.modality == "CT"
    assert modality_loader(None) is load_case

