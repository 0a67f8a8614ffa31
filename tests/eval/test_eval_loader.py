"""The default loader: medseg.io reading, pairing checks, and planes for the predictor."""

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.errors import InputError
from medseg.eval.loader import io_loader, slice_hwc


def test_grey_and_rgb_planes(tmp_path):
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((4, 5, 4), np.uint8), mode="RGBA").save(tmp_path / "c.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "m.png")
    grey, label = io_loader(tmp_path / "g.png", tmp_path / "m.png")
    rgb, _ = io_loader(tmp_path / "c.png", tmp_path / "m.png")
    assert slice_hwc(grey).shape == (4, 5) and label.array.shape == (1, 4, 5)
    assert slice_hwc(rgb).shape == (4, 5, 3)


def test_16_bit_image_keeps_its_values(tmp_path):
    Image.fromarray(np.array([[0, 1000], [2000, 4000]], np.uint16)).save(tmp_path / "d.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "m.png")
    image, _ = io_loader(tmp_path / "d.png", tmp_path / "m.png")
    assert slice_hwc(image).tolist() == [[0, 1000], [2000, 4000]]


def test_volume_pair(tmp_path):
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), affine), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.uint8), affine), tmp_path / "l.nii.gz")
    image, label = io_loader(tmp_path / "v.nii.gz", tmp_path / "l.nii.gz")
    assert image.array.shape == (1, 4, 5, 6) and label.array.shape == (4, 5, 6)
    assert slice_hwc(image, 2).shape == (5, 6)


def test_unreadable_and_mismatched_files_are_input_errors(tmp_path):
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(InputError, match="bad.png"):
        io_loader(tmp_path / "bad.png", tmp_path / "m.png")
    with pytest.raises(InputError, match="big.png"):
        io_loader(tmp_path / "big.png", tmp_path / "m.png")
    with pytest.raises(InputError, match="missing.png"):
        io_loader(tmp_path / "missing.png", tmp_path / "m.png")
