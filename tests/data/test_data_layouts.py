"""Reading the three dataset layouts (paired, HER-Seg, nnU-Net raw) in 2D and 3D into Samples."""

import subprocess
import sys

import pytest
from test_data_layouts_kit import (SPLITS, STEMS, make_herseg, make_nnunet, make_paired_2d, make_paired_3d,
                                   mask2d, picture, save_png, write_json)

from medseg.data import detect_layout, open_dataset, spec_from_json
from medseg.errors import InputError


def test_paired_2d(tmp_path):
    root = make_paired_2d(tmp_path / "kvasir_mini")
    spec = open_dataset(root)
    assert (spec.layout, spec.name, spec.modality) == ("paired", "kvasir_mini", None)
    assert spec.splits == SPLITS and spec.sources["splits"] == "splits.json"
    assert spec.classes == {0: "background", 1: "foreground"} and spec.sources["classes"] == "inferred"
    train = spec.samples("train")
    assert [s.stem for s in train] == ["c1", "c2", "c3"]
    assert train[0].image_paths == (root / "images" / "c1.png",)
    assert train[0].mask_path == root / "masks" / "c1.png"
    assert [s.stem for s in spec.samples("all")] == STEMS


def test_paired_3d_imagesTr_labelsTr(tmp_path):
    root = make_paired_3d(tmp_path / "heart")
    spec = open_dataset(root, modality="MR")
    assert detect_layout(root) == "paired"
    assert (spec.modality, spec.sources["modality"]) == ("MR", "caller")
    assert spec.classes == {0: "background", 1: "atrium", 2: "scar"}
    [sample] = spec.samples("val")
    assert sample.image_paths == (root / "imagesTr" / "c4.nii.gz",)
    assert sample.mask_path == root / "labelsTr" / "c4.nii.gz"


def test_paired_without_split_file_is_all_train(tmp_path):
    spec = open_dataset(make_paired_2d(tmp_path, splits=None))
    assert spec.splits == {"train": STEMS} and not spec.has_split_file


def test_herseg_split_names_with_and_without_suffix(tmp_path):
    root = make_herseg(tmp_path / "HER", name="HER-Seg")
    assert detect_layout(root) == "herseg"
    spec = open_dataset(root)
    assert spec.name == "HER-Seg" and spec.sources["splits"] == "HER-Seg_data_split.json"
    assert spec.splits == SPLITS  # "valid" -> "val", "c1.png" -> "c1"
    [sample] = spec.samples("val")
    assert sample.image_path == root / "image_1024" / "c4.png"
    assert sample.mask_path == root / "mask_1024" / "c4.png"


def test_nnunet_multichannel_with_splits_final(tmp_path):
    root = make_nnunet(tmp_path / "Dataset004_Prostate", folds=[
        {"train": ["p1", "p2", "p3"], "val": ["p4"]}, {"train": ["p2", "p3", "p4"], "val": ["p1"]}])
    assert detect_layout(root) == "nnunet"
    spec = open_dataset(root)
    assert (spec.name, spec.modality, spec.file_ending) == ("Prostate", "T2+ADC", ".nii.gz")
    assert spec.channels == {0: "T2", 1: "ADC"}
    assert spec.classes == {0: "background", 1: "zone", 2: "lesion"}
    assert spec.splits == {"train": ["p1", "p2", "p3"], "val": ["p4"], "test": ["p5"]}  # fold 0
    p1 = spec.samples("train")[0]
    assert [p.name for p in p1.image_paths] == ["p1_0000.nii.gz", "p1_0001.nii.gz"]
    assert p1.mask_path == root / "labelsTr" / "p1.nii.gz"
    [test] = spec.samples("test")  # imagesTs without labelsTs: no label
    assert test.mask_path is None and test.image_path == root / "imagesTs" / "p5_0000.nii.gz"
    with pytest.raises(InputError, match="no image\\+mask cases in split 'test'"):
        spec.samples("test", labelled=True)


def test_nnunet_without_split_file_is_all_train(tmp_path):
    spec = open_dataset(make_nnunet(tmp_path / "Dataset002_X", test=(), channels=("CT",)))
    assert spec.splits == {"train": ["p1", "p2", "p3", "p4"]}
    assert spec.modality == "CT" and not spec.has_split_file
    assert not spec.scan().missing_channels


def test_nnunet_2d_rgb_png_is_one_file(tmp_path):
    root = tmp_path / "Dataset005_Polyp"
    for case in ("a", "b"):
        save_png(root / "imagesTr" / f"{case}_0000.png", picture(1, rgb=True))
        save_png(root / "labelsTr" / f"{case}.png", mask2d(1))
    write_json(root / "dataset.json", {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {
        "background": 0, "polyp": 1}, "numTraining": 2, "file_ending": ".png"})
    spec = open_dataset(root)
    assert spec.modality is None  # R, G, B name the colours of a picture, not a modality
    assert [s.stem for s in spec.samples()] == ["a", "b"] and not spec.scan().missing_channels


def test_unknown_and_empty_splits(tmp_path):
    spec = open_dataset(make_paired_2d(tmp_path, splits={"train": ["c1"], "val": [], "test": ["c2"]}))
    with pytest.raises(InputError, match="unknown split 'tset'.*available: test, train, val, all"):
        spec.samples("tset")
    with pytest.raises(InputError, match="no image\\+mask cases in split 'val'") as info:
        spec.samples("val")
    assert str(tmp_path) in str(info.value)


def test_split_stems_without_files_warn(tmp_path):
    spec = open_dataset(make_paired_2d(tmp_path, splits={"test": ["c1", "ghost"]}))
    with pytest.warns(UserWarning, match="ghost"):
        assert [s.stem for s in spec.samples("test")] == ["c1"]


def test_unpaired_and_duplicated_files_warn_and_are_left_out(tmp_path):
    root = make_paired_2d(tmp_path, splits=None)
    (root / "masks" / "c2.png").unlink()
    save_png(root / "images" / "c3.bmp", picture(3))
    with pytest.warns(UserWarning) as record:
        spec = open_dataset(root)
    text = " ".join(str(w.message) for w in record)
    assert "images/c2.png" in text and "c3.bmp / c3.png" in text
    assert [s.stem for s in spec.samples()] == ["c1", "c4", "c5", "c6"]


def test_class_files(tmp_path):
    root = make_paired_2d(tmp_path, splits=None)
    write_json(root / "labels.json", {"ct": {"labels": {"0": "background", "1": "spleen"}},
                                      "mr": {"labels": {"0": "background", "2": "kidney"}}})
    assert open_dataset(root).classes == {0: "background", 1: "spleen", 2: "kidney"}
    write_json(root / "spec.json", {"name": "x", "modality": "dermoscopy"})
    spec = open_dataset(root)
    assert (spec.modality, spec.sources["modality"]) == ("dermoscopy", "spec.json")
    write_json(root / "classes.json", ["a"])
    with pytest.raises(InputError, match="classes.json"):
        open_dataset(root)


def test_spec_json_round_trip(tmp_path):
    spec = open_dataset(make_nnunet(tmp_path / "Dataset003_P"))
    again = spec_from_json(spec.to_json(tmp_path / "spec_out.json"))
    assert again == spec and again.to_dict() == spec.to_dict()
    assert spec_from_json(tmp_path / "spec_out.json") == spec
    assert [s.stem for s in again.samples("train")] == ["p1", "p2", "p3", "p4"]  # scanned lazily
    with pytest.raises(InputError, match="not a dataset spec"):
        spec_from_json('{"name": "x"}')


def test_detect_layout_names_the_expected_layouts(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(InputError, match="images/ \\+ masks/.*imagesTr/.*HER-Seg") as info:
        detect_layout(tmp_path)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "Dataset001_A" / "imagesTr").mkdir(parents=True)
    with pytest.raises(InputError, match="nnU-Net raw folder.*Dataset001_A"):
        open_dataset(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        detect_layout(tmp_path / "missing")


def test_importing_the_package_is_light():
    code = ("import sys, medseg.data; heavy = [m for m in ('torch', 'medseg.io', 'nibabel', 'tqdm') "
            "if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_eval_find_cases_reads_every_layout(tmp_path):
    from medseg.data.datasets import class_names, dataset_cases

    root = make_nnunet(tmp_path / "Dataset004_P", test_labels=True)
    cases = dataset_cases(root, "test")
    assert [(c.stem, c.image_path.name, c.mask_path.name) for c in cases] == [("p5", "p5_0000.nii.gz", "p5.nii.gz")]
    assert class_names(root) == {0: "background", 1: "zone", 2: "lesion"}
    assert [c.stem for c in dataset_cases(make_herseg(tmp_path / "her"), "val")] == ["c4"]
