"""Fixtures of the command-line tests: an in-process runner for ``medseg.cli.main`` and small
inputs written into ``tmp_path`` (a PNG, a NIfTI volume with a non-trivial affine, a tiny
images/ + masks/ + splits.json dataset)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

# The test picture: 60 wide x 40 high (width != height catches swapped axes), a bright rectangle.
PNG_W, PNG_H = 60, 40

# The test volume in NIfTI (x, y, z) order: 48 x 40 pixels, 5 slices.
VOL_SHAPE = (48, 40, 5)
VOL_AFFINE = np.array([
    [-0.8, 0.1, 0.0, 20.5],    # x flipped (LAS-like) and sheared
    [0.05, 0.9, 0.0, -13.25],
    [0.0, 0.02, 2.5, -7.0],
    [0.0, 0.0, 0.0, 1.0],
])


@pytest.fixture(autouse=True)
def _seed():
    """A fixed seed, so the random weights of litemedsam-tiny are the same every run."""
    torch.manual_seed(0)


@dataclass
class Run:
    rc: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """``cli("predict", "a.png", "--box", ...)`` runs ``medseg.cli.main`` in-process and returns
    Run(rc, out, err) with what it printed. Non-string arguments are turned into strings."""
    from medseg.cli import main

    def run(*argv) -> Run:
        capsys.readouterr()  # drop anything printed before
        rc = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Run(rc, captured.out, captured.err)

    return run


def _write_picture(path: Path, w: int = PNG_W, h: int = PNG_H, rgb: bool = False, seed: int = 0) -> Path:
    """A grey (or RGB) PNG of w x h pixels: noise with a bright rectangle in the middle."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 40, size=(h, w), dtype=np.uint8)
    a[h // 4: 3 * h // 4, w // 4: 3 * w // 4] += 180
    if rgb:
        a = np.stack([a, a // 2, 255 - a], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


@pytest.fixture
def png(tmp_path) -> Path:
    """A 60x40 grey PNG in its own folder ``tmp_path/in``."""
    return _write_picture(tmp_path / "in" / "scan.png")


@pytest.fixture
def make_png():
    """``make_png(path, w=60, h=40, rgb=False)`` writes a test picture and returns its path."""
    return _write_picture


@pytest.fixture
def nifti(tmp_path) -> Path:
    """A float32 NIfTI volume of 48x40x5 voxels with a flipped, sheared affine (sform and qform
    both set), a bright block in slices 1..3."""
    import nibabel as nib

    rng = np.random.default_rng(1)
    v = rng.random(VOL_SHAPE, dtype=np.float32) * 50
    v[10:34, 8:30, 1:4] += 300
    img = nib.Nifti1Image(v, VOL_AFFINE)
    img.set_qform(VOL_AFFINE, code=1)
    img.set_sform(VOL_AFFINE, code=2)
    path = tmp_path / "in" / "vol.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _write_dataset(root: Path, stems_test=("case2", "case3", "case4"), stems_train=("case1",)) -> Path:
    """images/<stem>.png + masks/<stem>.png (0/255 discs) + splits.json under ``root``."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:48, :56]
    for i, stem in enumerate((*stems_train, *stems_test)):
        cx, cy, r = 20 + 3 * i, 22 + 2 * i, 9 + i
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        rng = np.random.default_rng(i)
        img = rng.integers(0, 50, size=disc.shape, dtype=np.uint8)
        img[disc] += 160
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        Image.fromarray(disc.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")
    (root / "splits.json").write_text(json.dumps({"train": list(stems_train), "test": list(stems_test)}))
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A tiny images/ + masks/ dataset: train = case1, test = case2..case4 (56x48 grey PNGs)."""
    return _write_dataset(tmp_path / "tiny_ds")


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A fresh, empty current folder, to see that a command writes files only where it was asked to."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder
