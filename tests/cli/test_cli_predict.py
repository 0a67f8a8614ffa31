"""``medseg predict`` on 2D pictures: prompts, outputs, overwrite safety and bad input (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

TINY = ["--model", "litemedsam-tiny", "--device", "cpu"]
BOX = ["--box", 12, 8, 46, 32]  # around the bright rectangle of the 60x40 test picture


def _read(path):
    with Image.open(path) as im:
        return im.mode, im.size, np.array(im)


def test_box_writes_mask_png_of_the_input_size(cli, png, tmp_path):
    out = tmp_path / "out" / "mask.png"  # the parent folder does not exist yet
    r = cli("predict", png, *BOX, "--out", out, *TINY)
    assert r.rc == 0, r.err
    assert out.read_bytes().startswith(b"\x89PNG")
    mode, size, arr = _read(out)
    assert size == (60, 40) and arr.shape == (40, 60)
    assert set(np.unique(arr)) <= {0, 1}
    assert "object(s)" in r.out and str(out) in r.out
    assert "predicted IoU" in r.out
    assert "random weights" in r.err  # the tiny model has no published weights: says so


@pytest.mark.parametrize("prompt", [
    ["--point", 30, 20],
    ["--point", 30, 20, "--negative-point", 3, 3],
    ["--point", 30, 20, "--point", 25, 18, "--negative-point", 58, 38],
    [*BOX, "--point", 30, 20, "--negative-point", 3, 3],
], ids=["point", "point+negative", "2points+negative", "box+points"])
def test_points_and_negative_points(cli, png, tmp_path, prompt):
    out = tmp_path / "m.png"
    r = cli("predict", png, *prompt, "--out", out, *TINY)
    assert r.rc == 0, r.err
    _, size, arr = _read(out)
    assert size == (60, 40)
    assert set(np.unique(arr)) <= {0, 1}
    assert len(r.out.split("predicted IoU:")[1].split(",")) == 1  # one object


def test_two_boxes_are_two_objects(cli, png, tmp_path):
    out = tmp_path / "m.png"
    r = cli("predict", png, "--box", 2, 2, 28, 38, "--box", 32, 2, 58, 38, "--out", out, *TINY)
    assert r.rc == 0, r.err
    _, size, arr = _read(out)
    assert size == (60, 40)
    assert set(np.unique(arr)) <= {0, 1, 2}
    assert len(r.out.split("predicted IoU:")[1].split(",")) == 2  # one score per object


def test_overlay_is_an_rgb_png_of_the_input_size(cli, png, tmp_path):
    ov = tmp_path / "pics" / "overlay.png"
    r = cli("predict", png, *BOX, "--point", 30, 20, "--out", tmp_path / "m.png", "--overlay", ov, *TINY)
    assert r.rc == 0, r.err
    assert f"overlay -> {ov}" in r.out
    mode, size, arr = _read(ov)
    assert mode == "RGB" and size == (60, 40) and arr.shape == (40, 60, 3)


def test_overlay_of_an_rgb_input(cli, make_png, tmp_path):
    src = make_png(tmp_path / "colour.png", w=50, h=70, rgb=True)
    ov, out = tmp_path / "ov.png", tmp_path / "m.png"
    r = cli("predict", src, "--box", 10, 10, 40, 60, "--out", out, "--overlay", ov, *TINY)
    assert r.rc == 0, r.err
    assert _read(ov)[:2] == ("RGB", (50, 70))
    assert _read(out)[1] == (50, 70)


def test_default_output_name_in_the_current_folder(cli, png, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = cli("predict", png, *BOX, *TINY)
    assert r.rc == 0, r.err
    assert [p.name for p in work.iterdir()] == ["scan_mask.png"]
    assert "scan_mask.png" in r.out
    assert _read(work / "scan_mask.png")[1] == (60, 40)
    assert not (png.parent / "scan_mask.png").exists()  # not beside the input


def test_existing_out_is_kept_without_overwrite(cli, png, tmp_path):
    out = tmp_path / "m.png"
    out.write_bytes(b"precious")
    r = cli("predict", png, *BOX, "--out", out, *TINY)
    assert r.rc == 2
    assert "medseg predict: error:" in r.err and str(out) in r.err and "exists" in r.err
    assert out.read_bytes() == b"precious"

    r = cli("predict", png, *BOX, "--out", out, "--overwrite", *TINY)
    assert r.rc == 0, r.err
    assert _read(out)[1] == (60, 40)


def test_existing_overlay_is_kept_without_overwrite(cli, png, tmp_path):
    ov = tmp_path / "ov.png"
    ov.write_bytes(b"precious")
    r = cli("predict", png, *BOX, "--out", tmp_path / "m.png", "--overlay", ov, *TINY)
    assert r.rc == 2
    assert str(ov) in r.err and "exists" in r.err
    assert ov.read_bytes() == b"precious"


def test_refused_overlay_writes_no_mask(cli, png, tmp_path):
    ov, out = tmp_path / "ov.png", tmp_path / "m.png"
    ov.write_bytes(b"precious")
    assert cli("predict", png, *BOX, "--out", out, "--overlay", ov, *TINY).rc == 2
    assert not out.exists()


def test_out_never_overwrites_the_input(cli, png):
    before = png.read_bytes()
    for extra in ([], ["--overwrite"]):
        r = cli("predict", png, *BOX, "--out", png, *extra, *TINY)
        assert r.rc == 2
        assert "input" in r.err and str(png) in r.err
        assert png.read_bytes() == before


def test_overlay_never_overwrites_the_input(cli, png, tmp_path):
    before = png.read_bytes()
    r = cli("predict", png, *BOX, "--out", tmp_path / "m.png", "--overlay", png, "--overwrite", *TINY)
    assert png.read_bytes() == before
    assert r.rc == 2


@pytest.mark.parametrize("box, words", [
    ([46, 32, 12, 8], ["inverted"]),
    ([100, 100, 140, 120], ["outside", "60x40"]),
    ([-30, -30, -5, -5], ["outside"]),
    ([1, 2, 0, 40, 30, 0], ["scan.png", "4 numbers"]),
    ([1, 2, 3], ["scan.png", "4 numbers"]),
], ids=["inverted", "outside", "negative", "6-number-box-on-2D", "3-number-box"])
def test_bad_boxes_exit_2(cli, png, tmp_path, box, words):
    out = tmp_path / "m.png"
    r = cli("predict", png, "--box", *box, "--out", out, *TINY)
    assert r.rc == 2
    assert "medseg predict: error:" in r.err
    for word in words:
        assert word in r.err
    assert not out.exists()


def test_box_reaching_past_the_border_is_clipped(cli, png, tmp_path):
    out = tmp_path / "m.png"
    r = cli("predict", png, "--box", -10, -10, 200, 200, "--out", out, *TINY)
    assert r.rc == 0, r.err
    assert _read(out)[1] == (60, 40)


def test_point_outside_exits_2(cli, png, tmp_path):
    r = cli("predict", png, "--point", 61, 10, "--out", tmp_path / "m.png", *TINY)
    assert r.rc == 2 and "outside" in r.err


def test_no_prompt_exits_2(cli, png, tmp_path):
    r = cli("predict", png, "--out", tmp_path / "m.png", *TINY)
    assert r.rc == 2 and "--box" in r.err and str(png) in r.err
    r = cli("predict", png, "--negative-point", 5, 5, "--out", tmp_path / "m.png", *TINY)
    assert r.rc == 2 and "--box" in r.err


def test_points_with_two_boxes_exit_2(cli, png, tmp_path):
    r = cli("predict", png, *BOX, "--box", 1, 1, 5, 5, "--point", 30, 20, "--out", tmp_path / "m.png", *TINY)
    assert r.rc == 2 and "single --box" in r.err


def test_missing_file_exits_2(cli, tmp_path):
    missing = tmp_path / "nope.png"
    r = cli("predict", missing, *BOX, "--out", tmp_path / "m.png", *TINY)
    assert r.rc == 2
    assert "medseg predict: error:" in r.err
    assert str(missing) in r.err and "no such file" in r.err
    assert not (tmp_path / "m.png").exists()


def test_text_file_named_png_exits_2(cli, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture\n")
    r = cli("predict", fake, *BOX, "--out", tmp_path / "m.png", *TINY)
    assert r.rc == 2
    assert str(fake) in r.err and "not a picture" in r.err
    assert "Traceback" not in r.err


def test_unwritable_suffix_exits_2(cli, png, tmp_path):
    r = cli("predict", png, *BOX, "--out", tmp_path / "m.jpg", *TINY)
    assert r.rc == 2 and ".jpg" in r.err
    assert not (tmp_path / "m.jpg").exists()


def test_unknown_model_exits_2(cli, png, tmp_path):
    r = cli("predict", png, *BOX, "--out", tmp_path / "m.png", "--model", "no-such-model")
    assert r.rc == 2
    assert "no-such-model" in r.err and "litemedsam-tiny" in r.err  # lists the available ones


def test_missing_checkpoint_exits_2(cli, png, tmp_path):
    ckpt = tmp_path / "weights.pth"
    r = cli("predict", png, *BOX, "--out", tmp_path / "m.png", "--model", "litemedsam-tiny",
            "--checkpoint", ckpt)
    assert r.rc == 2 and str(ckpt) in r.err


def test_bad_device_exits_2(cli, png, tmp_path):
    r = cli("predict", png, *BOX, "--out", tmp_path / "m.png", "--model", "litemedsam-tiny", "--device", "gpu")
    assert r.rc == 2 and "gpu" in r.err


def test_argparse_errors_exit_2(cli, png):
    with pytest.raises(SystemExit) as exc:
        cli("predict", png, "--point", 1)  # a point needs X and Y
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli("predict")  # no input
    assert exc.value.code == 2


def test_output_size_writes_the_mask_and_overlay_on_that_grid(cli, png, tmp_path):
    import torch

    out, ov = tmp_path / "m.png", tmp_path / "ov.png"
    torch.manual_seed(0)  # the same random tiny model for both runs
    r = cli("predict", png, *BOX, "--output-size", 120, 80, "--out", out, "--overlay", ov, *TINY)
    assert r.rc == 0, r.err
    _, size, arr = _read(out)
    assert size == (120, 80) and arr.shape == (80, 120)
    assert _read(ov)[1] == (120, 80)
    small = tmp_path / "small.png"
    torch.manual_seed(0)
    assert cli("predict", png, *BOX, "--out", small, *TINY).rc == 0
    # the same mask on a finer grid: the share of the picture it covers stays (its outline moves by subpixels)
    assert abs((arr > 0).mean() - (_read(small)[2] > 0).mean()) < 0.02


@pytest.mark.parametrize("size", [["0", "10"], ["70000", "10"], ["1.5", "3"]])
def test_a_bad_output_size_is_named(cli, png, tmp_path, size, capsys):
    with pytest.raises(SystemExit) as exc:
        cli("predict", png, *BOX, "--output-size", *size, "--out", tmp_path / "m.png", *TINY)
    assert exc.value.code == 2 and "--output-size" in capsys.readouterr().err


def test_an_output_size_for_a_volume_is_refused(cli, nifti, tmp_path):
    r = cli("predict", nifti, "--box", 5, 5, 1, 30, 30, 3, "--output-size", 64, 64, "--out", tmp_path / "m.nii.gz", *TINY)
    assert r.rc == 2 and "output size applies to 2D pictures" in r.err and not (tmp_path / "m.nii.gz").exists()
