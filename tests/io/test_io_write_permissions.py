"""Written files get the permissions of a plain ``open(path, "w")``; a failed write changes
nothing."""

import contextlib
import os
import stat

import numpy as np
import pytest

from medseg.io import Meta, write_image, write_label
from medseg.io._util import atomic_write


@contextlib.contextmanager
def umask(mask: int):
    """Run the block under ``mask``; the previous umask is restored afterwards."""
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("name", ["lab.png", "lab.nii.gz", "lab.nii", "lab.mha", "lab.nrrd"])
def test_write_label_follows_umask(tmp_path, name):
    with umask(0o022):
        out = write_label(np.zeros((1, 4, 5), np.uint8), tmp_path / name)
    assert mode(out) == 0o644


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_write_image_follows_umask(tmp_path, mask, expected):
    with umask(mask):
        png = write_image(np.zeros((4, 5), np.uint8), tmp_path / "img.png")
        vol = write_image(np.zeros((2, 4, 5), np.float32), tmp_path / "img.nii.gz")
    assert mode(png) == expected and mode(vol) == expected


def test_new_parent_folder_and_file_follow_umask(tmp_path):
    with umask(0o022):
        out = write_label(np.zeros((4, 5), np.uint8), tmp_path / "new" / "lab.png")
    assert mode(out) == 0o644 and mode(out.parent) == 0o755


def test_overwrite_keeps_the_mode_of_the_replaced_file(tmp_path):
    """Like ``open(path, "w")`` on an existing file: its permissions stay as they were."""
    with umask(0o022):
        out = write_label(np.zeros((4, 5), np.uint8), tmp_path / "lab.png")
        os.chmod(out, 0o640)
        write_label(np.ones((4, 5), np.uint8), out, overwrite=True)
    assert mode(out) == 0o640


def test_failed_write_leaves_no_temp_file_and_keeps_the_target(tmp_path):
    target = tmp_path / "lab.nii.gz"
    target.write_bytes(b"the old label")
    os.chmod(target, 0o640)

    def half_write(tmp):
        tmp.write_bytes(b"half a label")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_write)
    assert target.read_bytes() == b"the old label" and mode(target) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.nii.gz"]

    with pytest.raises(KeyboardInterrupt):  # an interrupted write cleans up as well
        atomic_write(tmp_path / "new.png", lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.nii.gz"]


def test_failed_write_label_keeps_an_existing_output(tmp_path, monkeypatch):
    out = write_label(np.zeros((4, 5), np.uint8), tmp_path / "lab.png")
    before = out.read_bytes()

    def broken_png(path, arr):
        path.write_bytes(b"\x89PNG partial")
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr("medseg.io.writers.write_png", broken_png)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        write_label(np.ones((4, 5), np.uint8), out, overwrite=True)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.png"]


def test_write_like_a_nifti_keeps_umask(tmp_path):
    like = Meta(source=tmp_path / "elsewhere.nii.gz", affine=np.eye(4), shape=(2, 3, 4))
    with umask(0o077):
        out = write_label(np.zeros((2, 3, 4), np.uint8), tmp_path / "lab.nii.gz", like=like)
    assert mode(out) == 0o600
