"""Every bad input gives an InputError that names the file; writes never clobber files."""

import shutil
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import pydicom.data
import pytest
import SimpleITK as sitk
import tifffile

from medseg.errors import InputError
from medseg.io import (SUPPORTED_SUFFIXES, Meta, read_image, read_label, write_image,
                       write_label)

RNG = np.random.default_rng(2)
CT_SMALL = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"


def make(path: Path) -> Path:
    """A small valid file of the format ``path``'s suffix names (random, so it compresses badly)."""
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    if suffix in (".png", ".jpg", ".bmp"):
        PIL.Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    elif suffix == ".tif":
        tifffile.imwrite(path, RNG.integers(0, 256, (3, 64, 64), dtype=np.uint8),
                         photometric="minisblack")
    elif suffix in (".nii", ".nii.gz"):
        nib.save(nib.Nifti1Image(RNG.normal(size=(20, 20, 20)).astype(np.float32), np.eye(4)),
                 str(path))
    elif suffix in (".mha", ".nrrd"):
        sitk.WriteImage(sitk.GetImageFromArray(RNG.normal(size=(20, 20, 20))), str(path))
    elif suffix == ".dcm":
        shutil.copy(CT_SMALL, path)
    return path


def raises_naming(path, func=read_image, match=None, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        func(path, **kwargs)
    msg = str(err.value)
    assert Path(path).name in msg, msg
    if match:
        assert match in msg, msg
    return msg


FORMATS = [".png", ".jpg", ".bmp", ".tif", ".nii", ".nii.gz", ".mha", ".nrrd", ".dcm"]


def test_missing_file(tmp_path):
    raises_naming(tmp_path / "nope.nii.gz", match="no such file")
    raises_naming(tmp_path / "nope.png", read_label, match="no such file")


@pytest.mark.parametrize("suffix", FORMATS)
def test_truncated_file(tmp_path, suffix):
    full = make(tmp_path / f"full{suffix}")
    data = full.read_bytes()
    cut = tmp_path / f"cut_in_half{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    raises_naming(cut, match="truncated")
    raises_naming(cut, read_label)


@pytest.mark.parametrize("suffix", FORMATS)
def test_text_file_under_an_image_name(tmp_path, suffix):
    fake = tmp_path / f"notes{suffix}"
    fake.write_text("this is a text file, not an image\n" * 5)
    raises_naming(fake)
    raises_naming(fake, read_label)


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    raises_naming(tmp_path / "empty.png", match="empty")


def test_unsupported_suffix_lists_supported(tmp_path):
    (tmp_path / "scan.xyz").write_text("x")
    msg = raises_naming(tmp_path / "scan.xyz", match="unsupported")
    for suffix in SUPPORTED_SUFFIXES:
        assert suffix in msg
    (tmp_path / "scan.gz").write_text("x")
    raises_naming(tmp_path / "scan.gz", match=".nii.gz")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_decompression_bomb_is_refused_before_decoding(tmp_path):
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)  # 10 gigapixels, grey
    bomb = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png_chunk(b"IEND", b""))
    (tmp_path / "bomb.png").write_bytes(bomb)
    raises_naming(tmp_path / "bomb.png", match="bomb")


def test_pillow_limit_becomes_an_error(tmp_path, monkeypatch):
    path = make(tmp_path / "pic.png")  # 64 x 64 = 4096 pixels
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 3000)  # over it: a warning in Pillow
    raises_naming(path, match="4096 pixels, above the limit of 3000")


@pytest.mark.parametrize("suffix", FORMATS)
def test_max_voxels(tmp_path, suffix):
    path = make(tmp_path / f"big{suffix}")
    raises_naming(path, match="max_voxels", max_voxels=100)
    raises_naming(path, read_label, match="max_voxels", max_voxels=100)
    read_image(path, max_voxels=None)


def test_huge_nifti_header_is_refused_before_loading(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((5000, 5000, 5000))  # 125 G voxels declared, none present
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    (tmp_path / "huge.nii").write_bytes(header.binaryblock + b"\0" * 8)
    raises_naming(tmp_path / "huge.nii", match="max_voxels")


@pytest.mark.parametrize("bad,count", [(np.nan, 3), (np.inf, 2)])
def test_nan_inf_voxels(tmp_path, bad, count):
    data = np.zeros((4, 5, 6), np.float32)
    data.flat[:count] = bad
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "dirty.nii.gz"))
    msg = raises_naming(tmp_path / "dirty.nii.gz", match=f"{count} of 120 voxels")
    assert "NaN or Inf" in msg and "clean" in msg
    tifffile.imwrite(tmp_path / "dirty.tif", data, photometric="minisblack")
    raises_naming(tmp_path / "dirty.tif", match=f"{count} of 120")
    with pytest.raises(InputError, match="NaN or Inf"):
        write_image(data, tmp_path / "out.nii.gz")


def test_non_integer_label(tmp_path):
    tifffile.imwrite(tmp_path / "prob.tif", RNG.random((8, 8)).astype(np.float32))
    raises_naming(tmp_path / "prob.tif", read_label, match="integer")
    with pytest.raises(InputError, match="integer"):
        write_label(np.full((2, 3, 4), 0.5), tmp_path / "l.nii.gz")


def test_write_refuses_to_overwrite(tmp_path):
    out = write_label(np.zeros((5, 6), np.uint8), tmp_path / "l.png")
    with pytest.raises(InputError, match="overwrite=True") as err:
        write_label(np.ones((5, 6), np.uint8), out)
    assert "l.png" in str(err.value)
    assert read_label(out).array.max() == 0  # untouched
    write_label(np.ones((5, 6), np.uint8), out, overwrite=True)
    assert read_label(out).array.max() == 1
    image_out = write_image(np.zeros((5, 6), np.uint8), tmp_path / "i.png")
    with pytest.raises(InputError, match="already exists"):
        write_image(np.zeros((5, 6), np.uint8), image_out)


def test_write_never_over_its_input(tmp_path):
    src = make(tmp_path / "case.nii.gz")
    img = read_image(src)
    before = src.read_bytes()
    lab = np.zeros(img.spatial_shape, np.uint8)
    for func, arr in ((write_label, lab), (write_image, img.array)):
        with pytest.raises(InputError, match="never written over inputs") as err:
            func(arr, src, like=img.meta, overwrite=True)
        assert "case.nii.gz" in str(err.value)
    with pytest.raises(InputError, match="never written over inputs"):
        write_image(img, tmp_path / "." / "case.nii.gz", overwrite=True)  # same file, other name
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz"]  # no temp left over


def test_write_bad_requests(tmp_path):
    raises_naming(tmp_path / "l.jpg", lambda p: write_label(np.zeros((3, 3), np.uint8), p),
                  match=".nii.gz")
    raises_naming(tmp_path / "vol.png", lambda p: write_label(np.zeros((2, 3, 3), np.uint8), p),
                  match="3D labels")
    raises_naming(tmp_path / "neg.png", lambda p: write_label(np.full((3, 3), -1), p),
                  match="0..65535")
    like = Meta(source=tmp_path / "a.nii.gz", shape=(1, 4, 4))
    raises_naming(tmp_path / "shape.nii.gz",
                  lambda p: write_label(np.zeros((1, 3, 3), np.uint8), p, like=like),
                  match="like")
