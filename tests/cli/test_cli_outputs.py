"""The output policy and the defects a new user found (issue 10, section 3), through ``medseg.cli.main``:
never a dataset's own file, never over an existing file without --overwrite, --out and --overlay
distinct, an unwritable place is one clear line, failures give exit status 1, geometry kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

TINY = ["--model", "litemedsam-tiny", "--device", "cpu", "--no-progress"]
TINY_PREDICT = ["--model", "litemedsam-tiny", "--device", "cpu"]


def test_evaluate_never_writes_over_the_dataset_split_file(cli, dataset, work):
    split = dataset / "splits.json"
    before = split.read_bytes()
    for extra in ([], ["--overwrite"]):
        r = cli("evaluate", dataset, "--json", split, *TINY, *extra)
        assert r.rc == 2 and "splits.json" in r.err and "dataset's own files" in r.err
        assert split.read_bytes() == before
    r = cli("evaluate", dataset, "--csv", dataset / "classes.json", *TINY)
    assert r.rc == 2 and not (dataset / "classes.json").exists()


def test_evaluate_replaces_a_report_only_with_overwrite(cli, dataset, work):
    report = work / "r.json"
    report.write_text("keep me\n")
    r = cli("evaluate", dataset, "--json", report, *TINY)
    assert r.rc == 2 and "--overwrite" in r.err
    assert report.read_text() == "keep me\n"
    r = cli("evaluate", dataset, "--json", report, "--overwrite", *TINY)
    assert r.rc == 0, r.err
    assert json.loads(report.read_text())["summary"]["n_cases"] == 3
    assert sorted(p.name for p in work.iterdir()) == ["r.json"]  # no temporary file left, no figure


def test_every_output_is_checked_before_the_first_is_written(cli, dataset, work):
    (work / "taken.csv").write_text("x\n")
    r = cli("evaluate", dataset, "--json", work / "new.json", "--csv", work / "taken.csv", *TINY)
    assert r.rc == 2 and "taken.csv" in r.err
    assert not (work / "new.json").exists()


def test_evaluate_exits_1_and_counts_a_missing_mask(cli, dataset, work):
    (dataset / "masks" / "case3.png").unlink()
    report = work / "r.json"
    r = cli("evaluate", dataset, "--json", report, *TINY)
    assert r.rc == 1
    assert "case3" in r.err and "no mask file" in r.err and "UserWarning" not in r.err
    errors = json.loads(report.read_text())["errors"]
    assert [e["stem"] for e in errors] == ["case3"]


def test_an_antialiased_binary_mask_is_refused_not_scored_as_two_classes(cli, dataset, work):
    mask = np.asarray(Image.open(dataset / "masks" / "case2.png")).copy()
    edge = (mask == 255) & ~np.roll(mask == 255, 1, axis=1)
    mask[edge] = 128
    Image.fromarray(mask).save(dataset / "masks" / "case2.png")
    report = work / "r.json"
    r = cli("evaluate", dataset, "--json", report, *TINY)
    assert r.rc == 1
    result = json.loads(report.read_text())
    assert {row["class_id"] for row in result["cases"]} == {1}  # no class 128 or 255
    (error,) = result["errors"]
    assert error["stem"] == "case2" and "case2.png" in error["message"] and "threshold" in error["message"]


def test_out_and_overlay_naming_one_file_are_refused_before_writing(cli, png, tmp_path):
    same = tmp_path / "o.png"
    for extra in ([], ["--overwrite"]):
        r = cli("predict", png, "--box", 15, 10, 45, 30, "--out", same, "--overlay", same, *TINY_PREDICT, *extra)
        assert r.rc == 2 and "--out and --overlay are the same file" in r.err
        assert not same.exists()


def test_an_unwritable_output_folder_is_one_clear_line(cli, png, tmp_path):
    if os.geteuid() == 0:
        target = Path("/sys/medseg_cannot_write/mask.png")  # read-only even for root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "mask.png"
    r = cli("predict", png, "--box", 15, 10, 45, 30, "--out", target, *TINY_PREDICT)
    assert r.rc == 2
    assert "Traceback" not in r.err and "cannot write" in r.err and str(target) in r.err
    assert not target.exists()


def test_a_one_slice_nifti_keeps_its_geometry(cli, tmp_path):
    import nibabel as nib

    affine = np.diag([0.625, 0.625, 3.0, 1.0])
    affine[:3, 3] = (-40.0, 12.5, 7.0)
    data = np.zeros((48, 40, 1), dtype=np.float32)
    data[10:30, 8:28, 0] = 500
    source = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(source))
    out = tmp_path / "one_mask.nii.gz"
    r = cli("predict", source, "--box", 8, 10, 28, 30, "--out", out, *TINY_PREDICT)
    assert r.rc == 0, r.err
    written = nib.load(str(out))
    assert np.allclose(written.affine, affine), written.affine
    assert written.shape[:2] == (48, 40)


def test_user_errors_are_input_errors_not_key_errors(cli, png):
    r = cli("predict", png, "--box", 1, 1, 5, 5, "--model", "no-such-model")
    assert r.rc == 2 and "no-such-model" in r.err and "promptable models" in r.err
    r = cli("predict", png, "--task", "x", "--box", 1, 1, 5, 5, "--checkpoint", png)
    assert r.rc == 2 and "--task segments with no prompt" in r.err
