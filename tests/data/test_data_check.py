"""check_dataset finds each kind of problem, names the file and the fix; the `data check` command."""

import argparse
import json

import numpy as np
import pytest
from test_data_layouts_kit import (AFFINE, make_nnunet, make_paired_2d, make_paired_3d, mask2d, mask3d,
                                   save_nifti, save_png, volume, write_json)

from medseg.data import check_dataset
from medseg.data.cli import add_data_parser


def check(root, **kw):
    return check_dataset(root, progress=False, **kw)


def messages(items):
    return "\n".join(f"{stem}: {msg}" for stem, msg in items)


def test_clean_datasets_are_ok(tmp_path, capsys):
    for root in (make_paired_2d(tmp_path / "a"), make_paired_3d(tmp_path / "b"), make_nnunet(tmp_path / "c")):
        report = check(root)
        assert report.ok and not report.errors and not report.warnings, messages(report.errors)
    assert report.counts == {"samples": 5, "checked": 5, "errors": 0, "warnings": 0, "empty_masks": 0}
    report.print()
    assert "OK, 0 warning(s)" in capsys.readouterr().out


def test_binary_0_255_masks_are_class_1(tmp_path):
    report = check(make_paired_2d(tmp_path, value=255))
    assert report.ok and report.label_values == {0: 6, 255: 6}


def test_unpaired_files(tmp_path):
    root = make_paired_2d(tmp_path)
    (root / "masks" / "c2.png").rename(root / "masks" / "orphan.png")
    report = check(root)
    text = messages(report.errors)
    assert not report.ok
    assert "images/c2.png has no label" in text and "masks/orphan.png has no image" in text
    assert "split 'train'" in text and "c2" in text  # splits.json names c2, which lost its pair


def test_size_mismatch(tmp_path):
    root = make_paired_2d(tmp_path, splits=None)
    save_png(root / "masks" / "c3.png", mask2d(255, shape=(24, 30)))
    report = check(root)
    [(stem, message)] = report.errors
    assert stem == "c3" and "(1, 24, 32)" in message and "(1, 24, 30)" in message and "resize_label" in message


def test_3d_geometry_mismatch(tmp_path):
    root = make_paired_3d(tmp_path, splits=None)
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    save_nifti(root / "labelsTr" / "c2.nii.gz", mask3d(), affine=shifted)
    [(stem, message)] = check(root).errors
    assert stem == "c2" and "different world geometry" in message


def test_bad_label_value(tmp_path):
    root = make_paired_3d(tmp_path, splits=None)  # classes.json: 0, 1, 2
    save_nifti(root / "labelsTr" / "c1.nii.gz", mask3d(value=7))
    [(stem, message)] = check(root).errors
    assert stem == "c1" and "values 7" in message and "classes.json" in message
    # with inferred classes (no class file) an unknown value is only a warning
    root = make_paired_2d(tmp_path / "b", splits=None)
    save_png(root / "masks" / "c1.png", mask2d(1, second=3))
    report = check(root)
    assert report.ok and "values 3" in messages(report.warnings) and "classes.json" in messages(report.warnings)


def test_empty_masks_are_counted_warnings(tmp_path):
    root = make_paired_2d(tmp_path, splits=None)
    for stem in ("c2", "c5"):
        save_png(root / "masks" / f"{stem}.png", np.zeros((24, 32), np.uint8))
    report = check(root)
    assert report.ok and report.empty_masks == ["c2", "c5"] and report.counts["empty_masks"] == 2
    assert "empty mask" in messages(report.warnings) and "empty masks: 2 (c2, c5)" in report.format()


def test_nan_image(tmp_path):
    root = make_paired_3d(tmp_path, splits=None)
    vol = volume(1).astype(np.float32)
    vol[2, 3, 4] = np.nan
    save_nifti(root / "imagesTr" / "c4.nii.gz", vol)
    [(stem, message)] = check(root).errors
    assert stem == "c4" and "NaN" in message and "c4.nii.gz" in message


def test_unreadable_file(tmp_path):
    root = make_paired_2d(tmp_path, splits=None)
    (root / "images" / "c6.png").write_bytes(b"not a png at all")
    [(stem, message)] = check(root).errors
    assert stem == "c6" and "c6.png" in message and "not a picture" in message


def test_missing_and_mismatched_channels(tmp_path):
    root = make_nnunet(tmp_path / "Dataset009_P", test=())
    (root / "imagesTr" / "p2_0001.nii.gz").unlink()
    save_nifti(root / "imagesTr" / "p3_0001.nii.gz", volume(3, shape=(5, 12, 15)))
    report = check(root)
    text = messages(report.errors)
    assert "missing channel file(s) p2_0001" in text and "channel_names" in text
    assert "channel files differ in shape" in text and "p3_0001.nii.gz (5, 12, 15)" in text
    assert len(report.errors) == 2


def test_stem_in_two_splits_warns(tmp_path):
    report = check(make_paired_2d(tmp_path, splits={"train": ["c1", "c2"], "test": ["c2", "c3"]}))
    assert report.ok and "in both split 'train' and 'test'" in messages(report.warnings)


def test_split_and_max_cases(tmp_path):
    root = make_paired_2d(tmp_path)
    (root / "images" / "c6.png").write_bytes(b"garbage")
    report = check(root, split="train", max_cases=2)
    assert report.ok and (report.n_samples, report.n_checked) == (3, 2)
    assert not check(root, split="test").ok


def test_report_json(tmp_path):
    root = make_paired_2d(tmp_path / "d", splits=None)
    save_png(root / "masks" / "c1.png", np.zeros((24, 32), np.uint8))
    data = json.loads(check(root).to_json(tmp_path / "out" / "report.json").read_text())
    assert data["ok"] is True and data["counts"]["empty_masks"] == 1 and data["empty_masks"] == ["c1"]


def cli(*argv):
    parser = argparse.ArgumentParser()
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", *map(str, argv), "--no-progress"] if argv[0] == "check" else
                             ["data", *map(str, argv)])
    return args.func(args)


def test_cli_check(tmp_path, capsys):
    root = make_paired_2d(tmp_path / "d")
    assert cli("check", root, "--split", "val", "--limit", "1", "--json", tmp_path / "r.json") == 0
    out = capsys.readouterr().out
    assert "1 of 1 samples checked" in out and "OK" in out and (tmp_path / "r.json").is_file()
    save_png(root / "masks" / "c1.png", mask2d(1, shape=(10, 10)))
    assert cli("check", root) == 1
    assert "FAILED: 1 error(s)" in capsys.readouterr().out
    assert cli("check", tmp_path / "missing") == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_check_unknown_split_is_an_input_error(tmp_path, capsys):
    write_json(tmp_path / "splits.json", {"train": ["c1"]})
    make_paired_2d(tmp_path, splits=None)
    assert cli("check", tmp_path, "--split", "tset") == 2
    assert "available: train, all" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["check"], ["convert", "a", "b"], ["convert", "a", "b", "--to", "x"]])
def test_cli_arguments_are_validated(argv):
    with pytest.raises(SystemExit):
        cli(*argv)
