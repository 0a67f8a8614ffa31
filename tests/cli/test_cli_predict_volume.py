"""``medseg predict`` on a NIfTI volume: 3D boxes, --slices, geometry kept, z range respected."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

TINY = ["--model", "litemedsam-tiny", "--device", "cpu"]


def _load(path):
    img = nib.load(str(path))
    return img, np.asanyarray(img.dataobj)


def _same_geometry(out_path, in_path):
    out, _ = _load(out_path)
    src, src_data = _load(in_path)
    assert out.shape == src.shape
    assert np.array_equal(out.affine, src.affine)
    assert np.array_equal(out.header.get_sform(), src.header.get_sform())
    assert np.array_equal(out.header.get_qform(), src.header.get_qform())
    assert int(out.header["sform_code"]) == int(src.header["sform_code"])
    assert int(out.header["qform_code"]) == int(src.header["qform_code"])
    assert out.header.get_zooms() == src.header.get_zooms()


def _slices_with_labels(data) -> list[int]:
    return [int(z) for z in np.flatnonzero((data > 0).any(axis=(0, 1)))]  # NIfTI order (x, y, z)


def test_3d_box_keeps_affine_and_z_range(cli, nifti, tmp_path):
    out = tmp_path / "out" / "vol_mask.nii.gz"
    r = cli("predict", nifti, "--box", 10, 8, 1, 33, 29, 3, "--out", out, *TINY)
    assert r.rc == 0, r.err
    assert str(out) in r.out
    _same_geometry(out, nifti)
    _, data = _load(out)
    assert np.issubdtype(data.dtype, np.integer)
    assert set(np.unique(data)) <= {0, 1}
    assert set(_slices_with_labels(data)) <= {1, 2, 3}
    assert _slices_with_labels(data), "expected some voxels inside the box with the seeded tiny model"


def test_4_number_box_with_slices_equals_the_3d_box(cli, nifti, tmp_path):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    torch.manual_seed(0)
    assert cli("predict", nifti, "--box", 10, 8, 2, 33, 29, 3, "--out", a, *TINY).rc == 0
    torch.manual_seed(0)  # the same random weights again
    r = cli("predict", nifti, "--box", 10, 8, 33, 29, "--slices", 2, 3, "--out", b, *TINY)
    assert r.rc == 0, r.err
    _same_geometry(b, nifti)
    _, da = _load(a)
    _, db = _load(b)
    assert set(_slices_with_labels(db)) <= {2, 3}
    assert np.array_equal(da, db)


def test_default_volume_output_name_and_overlay(cli, nifti, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ov = work / "ov.png"
    r = cli("predict", nifti, "--box", 10, 8, 1, 33, 29, 3, "--overlay", ov, *TINY)
    assert r.rc == 0, r.err
    assert (work / "vol_mask.nii.gz").is_file()
    _same_geometry(work / "vol_mask.nii.gz", nifti)
    with Image.open(ov) as im:
        assert im.mode == "RGB" and im.size == (48, 40)  # one slice: x wide, y high


def test_two_3d_boxes_are_labels_1_and_2(cli, nifti, tmp_path):
    out = tmp_path / "m.nii.gz"
    r = cli("predict", nifti, "--box", 2, 2, 0, 20, 20, 1, "--box", 25, 20, 3, 45, 38, 4, "--out", out, *TINY)
    assert r.rc == 0, r.err
    _, data = _load(out)
    assert set(np.unique(data)) <= {0, 1, 2}
    # each object only on its own slices
    assert set(_slices_with_labels(data == 1)) <= {0, 1}
    assert set(_slices_with_labels(data == 2)) <= {3, 4}


def test_4_number_box_without_slices_exits_2(cli, nifti, tmp_path):
    out = tmp_path / "m.nii.gz"
    r = cli("predict", nifti, "--box", 10, 8, 33, 29, "--out", out, *TINY)
    assert r.rc == 2
    assert "medseg predict: error:" in r.err and "--slices" in r.err and str(nifti) in r.err
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (["--point", 20, 20], ["clicks"]),
    ([], ["3D box"]),
    (["--box", 1, 2, 3, 4, 5], ["4 (with --slices) or 6"]),
    (["--box", 10, 8, 3, 33, 29, 9], ["outside the volume"]),
    (["--box", 10, 8, 3, 33, 29, 1], ["inverted"]),
    (["--box", 10, 8, 33, 29, "--slices", 3, 1], ["inverted"]),
], ids=["point-on-volume", "no-prompt", "5-number-box", "z-past-the-end", "inverted-z", "inverted-slices"])
def test_bad_volume_prompts_exit_2(cli, nifti, tmp_path, args, words):
    out = tmp_path / "m.nii.gz"
    r = cli("predict", nifti, *args, "--out", out, *TINY)
    assert r.rc == 2
    for word in words:
        assert word in r.err
    assert not out.exists()


def test_volume_out_never_overwrites_the_input(cli, nifti):
    before = nifti.read_bytes()
    r = cli("predict", nifti, "--box", 10, 8, 1, 33, 29, 3, "--out", nifti, "--overwrite", *TINY)
    assert r.rc == 2 and "input" in r.err
    assert nifti.read_bytes() == before
