"""``medseg demo``, ``medseg models`` and the installed console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY = ["--model", "litemedsam-tiny", "--device", "cpu"]


def _size(path):
    with Image.open(path) as im:
        return im.mode, im.size


def test_demo_with_a_path_and_box_then_again_into_a_new_folder(cli, png, tmp_path):
    out = tmp_path / "demo_out"
    r = cli("demo", png, "--box", 12, 8, 46, 32, "--out", out, *TINY)
    assert r.rc == 0, r.err
    assert str(out) in r.out
    assert sorted(p.name for p in out.iterdir()) == ["scan_box_mask.png", "scan_box_overlay.png"]
    assert _size(out / "scan_box_mask.png")[1] == (60, 40)
    assert _size(out / "scan_box_overlay.png") == ("RGB", (60, 40))
    first = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}

    r = cli("demo", png, "--box", 12, 8, 46, 32, "--out", out, *TINY)
    assert r.rc == 0, r.err
    second = tmp_path / "demo_out-2"
    assert f"outputs in {second}" in r.out
    assert sorted(p.name for p in second.iterdir()) == ["scan_box_mask.png", "scan_box_overlay.png"]
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == first  # untouched

    assert cli("demo", png, "--box", 12, 8, 46, 32, "--out", out, *TINY).rc == 0
    assert (tmp_path / "demo_out-3").is_dir()


def test_demo_without_box_uses_the_central_box(cli, png, tmp_path):
    out = tmp_path / "d"
    r = cli("demo", png, "--out", out, *TINY)
    assert r.rc == 0, r.err
    assert "central box [15, 10, 45, 30]" in r.out
    assert (out / "scan_box_mask.png").is_file() and (out / "scan_box_overlay.png").is_file()


def test_demo_with_a_click_segments_from_it_and_a_box_too_when_given(cli, png, tmp_path):
    r = cli("demo", png, "--point", 30, 20, "--out", tmp_path / "c", *TINY)
    assert r.rc == 0, r.err
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["scan_click_mask.png", "scan_click_overlay.png"]
    assert "one click at [30, 20]" in r.out and "central box" not in r.out
    r = cli("demo", png, "--point", 30, 20, "--box", 12, 8, 46, 32, "--out", tmp_path / "b", *TINY)
    assert r.rc == 0, r.err
    assert len(list((tmp_path / "b").glob("*_mask.png"))) == 2


def test_demo_on_a_volume_writes_nifti_with_the_input_affine(cli, nifti, tmp_path):
    import nibabel as nib

    out = tmp_path / "d"
    r = cli("demo", nifti, "--box", 10, 8, 33, 29, "--out", out, *TINY)
    assert r.rc == 0, r.err
    mask = nib.load(str(out / "vol_box_mask.nii.gz"))
    src = nib.load(str(nifti))
    assert mask.shape == src.shape and np.array_equal(mask.affine, src.affine)
    data = np.asanyarray(mask.dataobj)
    assert not data[..., [0, 1, 3, 4]].any()  # a 4-number box on a volume: the middle slice only
    assert _size(out / "vol_box_overlay.png") == ("RGB", (48, 40))


def test_demo_missing_path_exits_2(cli, tmp_path):
    missing = tmp_path / "nothing.png"
    r = cli("demo", missing, "--box", 1, 1, 5, 5, "--out", tmp_path / "d", *TINY)
    assert r.rc == 2
    assert "medseg demo: error:" in r.err and str(missing) in r.err


@pytest.mark.slow
def test_builtin_demo_with_the_real_model(cli, real_weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("demo", "--device", "cpu")  # the default model is litemedsam, default --out ./medseg_demo
    assert r.rc == 0, r.err
    out = tmp_path / "medseg_demo"
    assert f"outputs in {Path('medseg_demo')}" in r.out or f"outputs in {out}" in r.out
    overlays = sorted(out.glob("*_overlay.png"))
    assert len(overlays) == 10  # one box and one click on each of the 5 images
    assert len(list(out.glob("*_box_mask.png"))) == 5 and len(list(out.glob("*_click_mask.png"))) == 5
    for ov in overlays:
        assert _size(ov)[0] == "RGB"
    for mask in out.glob("*_mask.png"):
        with Image.open(mask) as im:
            assert np.array(im).any(), f"{mask.name}: the real model found nothing from the demo prompt"


def test_models_lists_both(cli):
    r = cli("models")
    assert r.rc == 0
    names = [line.split()[0] for line in r.out.splitlines() if line.strip()]
    assert "litemedsam" in names and "litemedsam-tiny" in names
    assert any(line.startswith("litemedsam ") and "pretrained" in line for line in r.out.splitlines())


def _console_script() -> list[str]:
    beside = Path(sys.executable).with_name("medseg")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("medseg")
    return [found] if found else [sys.executable, "-m", "medseg.cli"]


def test_console_script_help(tmp_path):
    cmd = _console_script()
    top = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    assert top.stdout.startswith("usage: medseg")
    for sub in ("demo", "predict", "evaluate", "models"):
        assert sub in top.stdout

    pred = subprocess.run([*cmd, "predict", "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    assert pred.stdout.startswith("usage: medseg predict")
    for option in ("--box", "--point", "--negative-point", "--slices", "--out", "--overlay", "--overwrite",
                   "--model", "--device"):
        assert option in pred.stdout

    bad = subprocess.run([*cmd, "predict"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "input" in bad.stderr
    assert list(tmp_path.iterdir()) == []


def test_predict_path_leaves_heavy_readers_for_when_they_are_needed():
    """`medseg predict` on a picture imports only what it uses: scipy.ndimage (prompts from masks, overlays),
    pydicom (DICOM files) and matplotlib (figures) load at their first use, not at start-up."""
    code = ("import sys, medseg.cli, medseg.infer.files, medseg.io, medseg.viz, medseg.io.outputs, medseg.models; "
            "print(','.join(m for m in ('scipy.ndimage', 'pydicom', 'matplotlib') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ""
