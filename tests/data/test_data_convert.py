"""convert_dataset between paired, nnU-Net and HER-Seg: pixels, labels, geometry and splits survive."""

import argparse
import json

import numpy as np
import pytest
from test_data_layouts_kit import AFFINE, make_herseg, make_nnunet, make_paired_2d, make_paired_3d, write_json

from medseg.data import check_dataset, convert_dataset, open_dataset
from medseg.data.cli import add_data_parser
from medseg.errors import InputError
from medseg.io import read_image, read_label

CLASSES = {"0": "background", "1": "disc", "2": "cup"}


def convert(src, dst, to, **kw):
    return convert_dataset(src, dst, to=to, progress=False, **kw)


def snapshot(spec):
    """{stem: (image (C, Z, Y, X) of all channels, label (Z, Y, X) or None, affine or None)}."""
    out = {}
    for s in spec.samples("all"):
        images = [read_image(p) for p in s.image_paths]
        label = read_label(s.mask_path).array if s.mask_path else None
        out[s.stem] = (np.concatenate([i.array for i in images]), label, images[0].meta.affine)
    return out


def assert_same(a, b, geometry=False):
    assert sorted(a) == sorted(b)
    for stem in a:
        np.testing.assert_array_equal(a[stem][0], b[stem][0], err_msg=stem)
        np.testing.assert_array_equal(a[stem][1], b[stem][1], err_msg=stem)
        if geometry:
            np.testing.assert_allclose(a[stem][2], b[stem][2], atol=1e-5, err_msg=stem)


def test_round_trip_2d_paired_nnunet_herseg_paired(tmp_path):
    src = open_dataset(make_paired_2d(tmp_path / "odoc", classes=CLASSES))  # grey and RGB, ids 0/1/2
    nn = convert(src.root, tmp_path / "nnUNet_raw", "nnunet")
    assert nn.root == tmp_path / "nnUNet_raw" / "Dataset001_odoc" and nn.layout == "nnunet"
    assert sorted(p.name for p in (nn.root / "imagesTs").iterdir()) == ["c5_0000.png", "c6_0000.png"]
    assert json.loads((nn.root / "splits_final.json").read_text()) == [{"train": ["c1", "c2", "c3"], "val": ["c4"]}]
    info = json.loads((nn.root / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, "disc": 1, "cup": 2}
    assert (info["numTraining"], info["file_ending"]) == (4, ".png")
    her = convert(nn.root, tmp_path / "her", "herseg")
    split = json.loads((tmp_path / "her" / "odoc_data_split.json").read_text())
    assert split == {"train": ["c1.png", "c2.png", "c3.png"], "valid": ["c4.png"], "test": ["c5.png", "c6.png"]}
    back = convert(her.root, tmp_path / "back", "paired")
    for spec in (nn, her, back):
        assert spec.splits == src.splits and spec.classes == src.classes, spec.layout
        assert check_dataset(spec.root, progress=False).ok
    assert_same(snapshot(src), snapshot(back))
    assert_same(snapshot(src), snapshot(nn))


def test_binary_255_masks_become_class_ids(tmp_path):
    src = make_paired_2d(tmp_path / "polyp", value=255, splits=None)
    nn = convert(src, tmp_path / "Dataset007_Polyp", "nnunet")
    assert nn.root == tmp_path / "Dataset007_Polyp" and not (nn.root / "splits_final.json").exists()
    assert nn.splits == {"train": ["c1", "c2", "c3", "c4", "c5", "c6"]}
    for sample in nn.samples():
        assert set(np.unique(read_label(sample.mask_path).array)) == {0, 1}
    back = convert(nn.root, tmp_path / "back", "paired")
    assert not (back.root / "splits.json").exists() and not back.has_split_file


def test_round_trip_3d_keeps_geometry(tmp_path):
    src = open_dataset(make_paired_3d(tmp_path / "heart"))
    nn = convert(src.root, tmp_path / "Dataset002_Heart", "nnunet")
    assert (nn.root / "imagesTr" / "c1_0000.nii.gz").is_file() and (nn.root / "labelsTs" / "c5.nii.gz").is_file()
    her = convert(nn.root, tmp_path / "her", "herseg")
    back = convert(her.root, tmp_path / "back", "paired")
    assert (back.root / "imagesTr" / "c1.nii.gz").is_file()
    assert back.splits == src.splits and back.classes == src.classes
    before, after = snapshot(src), snapshot(back)
    assert_same(before, after, geometry=True)
    np.testing.assert_allclose(after["c1"][2], AFFINE, atol=1e-5)
    assert read_label(back.samples()[0].mask_path).array.dtype.kind in "iu"


def test_multichannel_nnunet_through_paired_and_herseg(tmp_path):
    src = open_dataset(make_nnunet(tmp_path / "Dataset004_Prostate", test_labels=True,
                                   folds=[{"train": ["p1", "p2"], "val": ["p3", "p4"]}]))
    paired = convert(src.root, tmp_path / "paired", "paired")  # channel files kept: <case>_0000, _0001
    assert [p.name for p in paired.samples()[0].image_paths] == ["p1_0000.nii.gz", "p1_0001.nii.gz"]
    assert paired.modality == "T2+ADC"
    her = convert(paired.root, tmp_path / "her", "herseg")  # channels stacked in one (C, Z, Y, X) file
    assert read_image(her.samples()[0].image_path).array.shape[0] == 2
    nn = convert(her.root, tmp_path / "Dataset005_Again", "nnunet")  # split back into channel files
    assert nn.channels == {0: "T2", 1: "ADC"}
    for spec in (paired, her, nn):
        assert spec.splits == src.splits and spec.classes == src.classes
        assert_same(snapshot(src), snapshot(spec), geometry=True)


def test_refuses_existing_dst_and_overwrite_replaces(tmp_path):
    src = make_herseg(tmp_path / "her")
    convert(src, tmp_path / "out", "paired")
    with pytest.raises(InputError, match="already exists.*overwrite"):
        convert(src, tmp_path / "out", "paired")
    (tmp_path / "out" / "images" / "stale.png").write_bytes(b"old")
    spec = convert(src, tmp_path / "out", "paired", overwrite=True)
    assert not (tmp_path / "out" / "images" / "stale.png").exists() and len(spec.samples()) == 6
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.txt").write_text("precious")
    with pytest.raises(InputError, match="not a dataset folder"):
        convert(src, tmp_path / "notes", "paired", overwrite=True)
    assert (tmp_path / "notes" / "thesis.txt").read_text() == "precious"
    convert(src, tmp_path / "raw", "nnunet")
    with pytest.raises(InputError, match="Dataset001_her already exists"):
        convert(src, tmp_path / "raw", "nnunet")


def test_never_writes_into_src(tmp_path):
    src = make_paired_2d(tmp_path / "src")
    before = sorted((p.relative_to(src), p.stat().st_mtime_ns) for p in src.rglob("*"))
    for dst in (src, src / "converted", tmp_path):
        with pytest.raises(InputError, match="overlap the source"):
            convert(src, dst, "herseg", overwrite=True)
    assert sorted((p.relative_to(src), p.stat().st_mtime_ns) for p in src.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no partial output left behind


def test_failed_conversion_leaves_nothing(tmp_path):
    src = make_paired_2d(tmp_path / "src", splits=None)
    (src / "masks" / "c4.png").write_bytes(b"broken")
    with pytest.raises(InputError, match="c4.png"):
        convert(src, tmp_path / "Dataset001_X", "nnunet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_bad_arguments(tmp_path):
    src = make_paired_2d(tmp_path / "src")
    with pytest.raises(InputError, match="unknown target layout 'coco'"):
        convert(src, tmp_path / "x", "coco")
    with pytest.raises(InputError, match="dataset id 003 but dataset_id=4"):
        convert(src, tmp_path / "Dataset003_A", "nnunet", dataset_id=4)
    write_json(src / "splits.json", {"train": "c1"})
    with pytest.raises(InputError, match="splits.json"):
        convert(src, tmp_path / "y", "herseg")


def test_cli_convert(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_data_parser(parser.add_subparsers(dest="command"))
    src = make_paired_2d(tmp_path / "src")
    argv = ["data", "convert", str(src), str(tmp_path / "raw"), "--to", "nnunet", "--dataset-id", "12",
            "--no-progress"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert "Dataset012_src" in capsys.readouterr().out and (tmp_path / "raw" / "Dataset012_src").is_dir()
    args = parser.parse_args(argv)
    assert args.func(args) == 2 and "already exists" in capsys.readouterr().err
    args = parser.parse_args(argv + ["--overwrite"])
    assert args.func(args) == 0
