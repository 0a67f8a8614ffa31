"""PNG / JPEG / BMP / TIFF reading and PNG writing; labels, check_pair, resize_label."""

import numpy as np
import PIL.Image
import pytest
import tifffile

from medseg.errors import InputError
from medseg.io import (Image, Label, Meta, check_pair, read_image, read_label, resize_label,
                       write_image, write_label)

RNG = np.random.default_rng(0)


def save(arr, path):
    PIL.Image.fromarray(arr).save(path)
    return path


def test_png_grey_8bit(tmp_path):
    a = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    img = read_image(save(a, tmp_path / "g.png"))
    assert img.array.shape == (1, 1, 20, 30) and img.array.dtype == np.uint8
    np.testing.assert_array_equal(img.array[0, 0], a)
    m = img.meta
    assert m.format == "png" and m.dtype == "uint8" and m.spacing == (1.0, 1.0, 1.0)
    assert m.affine is None and m.modality is None and m.source == tmp_path / "g.png"
    assert m.shape == (1, 20, 30)


def test_png_16bit_keeps_values(tmp_path):
    a = RNG.integers(0, 65536, (17, 23), dtype=np.uint16)
    a[0, 0], a[0, 1] = 0, 65535
    img = read_image(save(a, tmp_path / "g16.png"))
    assert img.array.dtype == np.uint16 and img.meta.dtype == "uint16"
    np.testing.assert_array_equal(img.array[0, 0], a)


def test_png_rgb_and_rgba_give_three_channels(tmp_path):
    rgba = RNG.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    img = read_image(save(rgba, tmp_path / "rgba.png"))
    assert img.array.shape == (3, 1, 10, 12)
    np.testing.assert_array_equal(np.moveaxis(img.array[:, 0], 0, -1), rgba[..., :3])
    img = read_image(save(rgba[..., :3].copy(), tmp_path / "rgb.png"))
    assert img.array.shape == (3, 1, 10, 12)


def test_palette_png_image_is_rgb_label_is_indices(tmp_path):
    idx = RNG.integers(0, 4, (9, 11), dtype=np.uint8)
    pim = PIL.Image.fromarray(idx, "P")
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12)
    pim.putpalette(palette)
    pim.save(tmp_path / "pal.png")
    img = read_image(tmp_path / "pal.png")
    assert img.array.shape == (3, 1, 9, 11)
    np.testing.assert_array_equal(img.array[0, 0], np.where(idx == 1, 255, 0))
    lab = read_label(tmp_path / "pal.png")
    assert lab.array.shape == (1, 9, 11) and lab.array.dtype.kind in "iu"
    np.testing.assert_array_equal(lab.array[0], idx)


def test_grey_alpha_and_bilevel(tmp_path):
    la = RNG.integers(0, 256, (6, 7, 2), dtype=np.uint8)
    PIL.Image.fromarray(la, "LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(img.array[0, 0], la[..., 0])
    PIL.Image.fromarray(la[..., 0] > 128).save(tmp_path / "bw.png")
    assert set(np.unique(read_label(tmp_path / "bw.png").array)) <= {0, 1}
    assert set(np.unique(read_image(tmp_path / "bw.png").array)) <= {0, 255}


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "jpeg"), (".jpeg", "jpeg"), (".bmp", "bmp")])
def test_jpeg_bmp(tmp_path, suffix, fmt):
    a = np.zeros((16, 24, 3), np.uint8)
    a[4:12, 6:18] = (200, 100, 50)
    opts = {"quality": 95, "subsampling": 0} if fmt == "jpeg" else {}
    PIL.Image.fromarray(a).save(tmp_path / f"x{suffix}", **opts)
    img = read_image(tmp_path / f"x{suffix}")
    assert img.array.shape == (3, 1, 16, 24) and img.meta.format == fmt
    assert abs(int(img.array[0, 0, 8, 12]) - 200) < 8  # lossy for JPEG


def test_tiff_grey_rgb_multipage(tmp_path):
    grey = RNG.integers(0, 4000, (12, 13), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", grey)
    img = read_image(tmp_path / "g.tif")
    assert img.array.shape == (1, 1, 12, 13) and img.array.dtype == np.uint16
    np.testing.assert_array_equal(img.array[0, 0], grey)

    rgb = RNG.integers(0, 256, (12, 13, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tiff", rgb, photometric="rgb")
    img = read_image(tmp_path / "rgb.tiff")
    assert img.array.shape == (3, 1, 12, 13)
    np.testing.assert_array_equal(np.moveaxis(img.array[:, 0], 0, -1), rgb)

    stack = RNG.integers(0, 256, (5, 12, 13), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    img = read_image(tmp_path / "stack.tif")
    assert img.array.shape == (1, 5, 12, 13) and img.meta.format == "tiff"
    np.testing.assert_array_equal(img.array[0], stack)
    lab = read_label(tmp_path / "stack.tif")
    assert lab.array.shape == (5, 12, 13)

    rgb_stack = RNG.integers(0, 256, (4, 12, 13, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgbstack.tif", rgb_stack, photometric="rgb")
    img = read_image(tmp_path / "rgbstack.tif")
    assert img.array.shape == (3, 4, 12, 13)
    np.testing.assert_array_equal(np.moveaxis(img.array, 0, -1), rgb_stack)


def test_tiff_rgba_drops_alpha(tmp_path):
    rgba = RNG.integers(0, 256, (8, 9, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    img = read_image(tmp_path / "rgba.tif")
    assert img.array.shape == (3, 1, 8, 9)
    np.testing.assert_array_equal(np.moveaxis(img.array[:, 0], 0, -1), rgba[..., :3])


def test_rgb_mask_with_equal_channels_becomes_one_channel(tmp_path):
    m = np.zeros((10, 10), np.uint8)
    m[2:5, 3:8] = 255
    save(np.stack([m, m, m, np.full_like(m, 255)], -1), tmp_path / "mask.png")
    lab = read_label(tmp_path / "mask.png")
    assert lab.array.shape == (1, 10, 10) and lab.array.dtype == np.uint8
    np.testing.assert_array_equal(lab.array[0], m)


def test_colour_mask_with_differing_channels_is_refused(tmp_path):
    rgb = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    save(rgb, tmp_path / "colour_mask.png")
    with pytest.raises(InputError, match="colour_mask.png"):
        read_label(tmp_path / "colour_mask.png")


def test_png_label_round_trip_uint8_and_uint16(tmp_path):
    lab = RNG.integers(0, 5, (1, 14, 15)).astype(np.int64)
    out = write_label(lab, tmp_path / "sub" / "lab.png")
    back = read_label(out)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, lab)
    big = lab.copy()
    big[0, 0, 0] = 700  # instance ids beyond 255
    back = read_label(write_label(big[0], tmp_path / "lab16.png"))
    assert back.array.dtype == np.uint16 and back.array[0, 0, 0] == 700
    np.testing.assert_array_equal(back.array, big)


def test_png_image_write_round_trip(tmp_path):
    rgb = RNG.integers(0, 256, (3, 1, 8, 9), dtype=np.uint8)
    back = read_image(write_image(rgb, tmp_path / "o.png"))
    np.testing.assert_array_equal(back.array, rgb)
    grey16 = RNG.integers(0, 65536, (8, 9), dtype=np.uint16)
    back = read_image(write_image(grey16, tmp_path / "o16.png"))
    np.testing.assert_array_equal(back.array[0, 0], grey16)
    with pytest.raises(InputError, match="float"):
        write_image(np.zeros((8, 9), np.float32), tmp_path / "f.png")


def test_check_pair_names_both_files(tmp_path):
    meta_i = Meta(source=tmp_path / "img.png")
    meta_l = Meta(source=tmp_path / "msk.png")
    image = Image(np.zeros((1, 1, 4, 5), np.uint8), meta_i)
    check_pair(image, Label(np.zeros((1, 4, 5), np.uint8), meta_l))
    with pytest.raises(InputError) as err:
        check_pair(image, Label(np.zeros((1, 4, 6), np.uint8), meta_l))
    assert "img.png" in str(err.value) and "msk.png" in str(err.value)


def test_resize_label_is_nearest_and_keeps_values():
    lab = np.array([[0, 3], [7, 1]], np.uint8)
    up = resize_label(lab, (4, 4))
    np.testing.assert_array_equal(up, np.kron(lab, np.ones((2, 2), np.uint8)))
    assert up.dtype == np.uint8
    vol = RNG.integers(0, 4, (3, 7, 9)).astype(np.uint8)
    small = resize_label(vol, (2, 5, 4))
    assert small.shape == (2, 5, 4) and set(np.unique(small)) <= set(np.unique(vol))
    np.testing.assert_array_equal(resize_label(vol, vol.shape), vol)
