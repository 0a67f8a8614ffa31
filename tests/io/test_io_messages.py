"""Error messages say what a person can do (not only a Python call), and state the geometry."""

import nibabel as nib
import numpy as np
import PIL.Image
import pytest

from medseg.errors import InputError
from medseg.io import Image, Label, Meta, check_pair, read_image, write_label

PYTHON_ONLY = ("geometry=False", "MAX_IMAGE_PIXELS", "overwrite=True", "pass a larger",
               "numpy.nan_to_num")


def pair(spacing_image, spacing_mask, origin_mask=(0.0, 0.0, 0.0), shape=(4, 6, 8)):
    """An image and a mask of the same shape (Z, Y, X) with the given (z, y, x) spacings."""
    def meta(name, spacing, origin):
        aff = np.diag(list(spacing[::-1]) + [1.0])
        aff[:3, 3] = origin
        return Meta(spacing=tuple(spacing), origin=tuple(origin), affine=aff,
                    source=f"/data/{name}", shape=shape)
    image = Image(np.zeros((1,) + shape, np.float32), meta("img.nii.gz", spacing_image,
                                                           (0.0, 0.0, 0.0)))
    label = Label(np.zeros(shape, np.uint8), meta("msk.nii.gz", spacing_mask, origin_mask))
    return image, label


def no_python_only_advice(msg):
    for words in PYTHON_ONLY:
        assert words not in msg, msg


def mismatch(*args, **kwargs) -> str:
    """The message of check_pair on the pair ``pair(*args, **kwargs)`` (which must not match)."""
    image, label = pair(*args, **kwargs)
    with pytest.raises(InputError) as err:
        check_pair(image, label)
    return str(err.value)


def test_doubled_spacing_states_both_spacings_and_the_ratio():
    msg = mismatch((1.25, 0.625, 0.625), (2.5, 1.25, 1.25))
    assert "img.nii.gz" in msg and "msk.nii.gz" in msg
    assert "image spacing (z, y, x) (1.25, 0.625, 0.625) mm" in msg, msg
    assert "mask spacing (z, y, x) (2.5, 1.25, 1.25) mm" in msg, msg
    assert "mask / image ratio (2, 2, 2)" in msg, msg
    assert "different world geometry" in msg
    assert "resample the mask onto the image's grid" in msg
    no_python_only_advice(msg)


def test_one_axis_differs_ratio_per_axis():
    msg = mismatch((3.0, 0.7, 0.7), (1.5, 0.7, 0.7))
    assert "(3, 0.7, 0.7) mm" in msg and "(1.5, 0.7, 0.7) mm" in msg
    assert "ratio (0.5, 1, 1)" in msg, msg


def test_shifted_origin_states_both_origins():
    msg = mismatch((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), origin_mask=(5.0, 0.0, -2.5))
    assert "image origin (x, y, z) (0, 0, 0) mm" in msg, msg
    assert "mask origin (x, y, z) (5, 0, -2.5) mm" in msg, msg
    assert "spacing" not in msg and "directions" not in msg, msg  # equal, so not listed
    no_python_only_advice(msg)


def test_rotated_mask_states_the_direction_difference():
    image, label = pair((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    rot = np.eye(4)
    rot[:2, :2] = [[0.0, -1.0], [1.0, 0.0]]  # 90 degrees about z
    label.meta.affine = rot
    with pytest.raises(InputError) as err:
        check_pair(image, label)
    assert "axis directions differ by up to 90 degrees" in str(err.value), str(err.value)


def test_geometry_false_still_skips_the_world_check():
    image, label = pair((1.25, 0.625, 0.625), (2.5, 1.25, 1.25))
    check_pair(image, label, geometry=False)


def test_shape_mismatch_says_resample_the_mask():
    image, _ = pair((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    label = Label(np.zeros((4, 6, 9), np.uint8), Meta(source="/data/msk.png"))
    with pytest.raises(InputError) as err:
        check_pair(image, label)
    msg = str(err.value)
    assert "(4, 6, 8)" in msg and "(4, 6, 9)" in msg
    assert "resample the mask onto the image's grid" in msg and "nearest" in msg, msg
    no_python_only_advice(msg)


def test_pillow_pixel_limit_says_pixels_limit_and_downsample(tmp_path, monkeypatch):
    PIL.Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "pic.png")  # 4096 pixels
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 3000)
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "pic.png")
    msg = str(err.value)
    assert "pic.png" in msg and "4096 pixels, above the limit of 3000" in msg, msg
    assert "downsample it first" in msg
    no_python_only_advice(msg)


def test_voxel_limit_says_count_limit_and_downsample(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)),
             str(tmp_path / "big.nii.gz"))
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "big.nii.gz", max_voxels=500)
    msg = str(err.value)
    assert "big.nii.gz" in msg and "1000 elements" in msg and "above the limit of 500" in msg
    assert "downsample or crop it first" in msg, msg
    no_python_only_advice(msg)
    assert read_image(tmp_path / "big.nii.gz", max_voxels=1000).array.size == 1000


def test_existing_output_names_the_command_line_flag_first(tmp_path):
    out = write_label(np.zeros((3, 4), np.uint8), tmp_path / "lab.png")
    with pytest.raises(InputError) as err:
        write_label(np.zeros((3, 4), np.uint8), out)
    msg = str(err.value)
    assert "already exists" in msg and "another path" in msg
    assert msg.index("--overwrite") < msg.index("overwrite=True"), msg


def test_nan_voxels_say_how_to_clean_without_python(tmp_path):
    data = np.zeros((2, 3, 4), np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "dirty.nii.gz"))
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "dirty.nii.gz")
    msg = str(err.value)
    assert "1 of 24 voxels are NaN or Inf" in msg and "clean" in msg
    no_python_only_advice(msg)
