"""Finding cases in images/+masks/ and nnU-Net dataset folders."""

import numpy as np
import pytest
from evalkit import rectangle, write_case, write_json

from medseg.errors import InputError
from medseg.data.datasets import class_names, dataset_cases


@pytest.fixture
def dataset(tmp_path):
    for stem in ("case10", "case2", "case1", "case3"):
        write_case(tmp_path, stem, rectangle())
    return tmp_path


def test_all_cases_in_natural_order_without_splits(dataset):
    assert [c.stem for c in dataset_cases(dataset)] == ["case1", "case2", "case3", "case10"]
    # without splits.json every split means all cases
    assert len(dataset_cases(dataset, "test")) == 4


def test_case_paths(dataset):
    case = dataset_cases(dataset)[0]
    assert case.image_path == dataset / "images" / "case1.png"
    assert case.mask_path == dataset / "masks" / "case1.png"


def test_splits(dataset):
    write_json(dataset / "splits.json", {"train": ["case1", "case2"], "val": [], "test": ["case10.png", "case3"]})
    assert [c.stem for c in dataset_cases(dataset, "train")] == ["case1", "case2"]
    assert [c.stem for c in dataset_cases(dataset, "test")] == ["case10", "case3"]
    assert len(dataset_cases(dataset, "all")) == 4


def test_unknown_split_lists_the_available_ones(dataset):
    write_json(dataset / "splits.json", {"train": ["case1"], "test": ["case2"]})
    with pytest.raises(InputError, match="unknown split 'tset'.*test, train, all"):
        dataset_cases(dataset, "tset")


def test_empty_split_is_an_error_naming_the_folder(dataset):
    write_json(dataset / "splits.json", {"train": ["case1"], "val": [], "test": ["case2"]})
    with pytest.raises(InputError, match="no image\\+mask cases in split 'val'") as info:
        dataset_cases(dataset, "val")
    assert str(dataset) in str(info.value)


def test_split_stems_without_files_warn(dataset):
    write_json(dataset / "splits.json", {"test": ["case1", "ghost"]})
    with pytest.warns(UserWarning, match="ghost"):
        assert [c.stem for c in dataset_cases(dataset, "test")] == ["case1"]


def test_unpaired_files_are_listed_in_a_warning(dataset):
    write_case(dataset, "lonely", rectangle())
    (dataset / "masks" / "lonely.png").rename(dataset / "masks" / "orphan.png")
    with pytest.warns(UserWarning, match="2 unpaired.*images/lonely.png.*masks/orphan.png"):
        cases = dataset_cases(dataset)
    assert [c.stem for c in cases] == ["case1", "case2", "case3", "case10"]


def test_any_image_extension_pairs_with_the_mask(tmp_path):
    write_case(tmp_path, "a", rectangle(), suffix=".jpg")
    write_case(tmp_path, "b", rectangle(), suffix=".bmp")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    assert [c.image_path.suffix for c in dataset_cases(tmp_path)] == [".jpg", ".bmp"]


def test_duplicate_stems_are_skipped_with_a_warning(tmp_path):
    write_case(tmp_path, "a", rectangle())
    write_case(tmp_path, "a", rectangle(), suffix=".jpg")
    write_case(tmp_path, "b", rectangle())
    with pytest.warns(UserWarning, match="a.jpg / a.png"):
        assert [c.stem for c in dataset_cases(tmp_path)] == ["b"]


def test_nnunet_layout(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for name in ("liver_001_0000.nii.gz", "liver_001_0001.nii.gz", "liver_002.nii.gz", "liver_003_0000.nii.gz"):
        (tmp_path / "imagesTr" / name).write_bytes(b"")
    for name in ("liver_001.nii.gz", "liver_002.nii.gz"):
        (tmp_path / "labelsTr" / name).write_bytes(b"")
    with pytest.warns(UserWarning, match="liver_003_0000.nii.gz"):
        cases = dataset_cases(tmp_path)
    assert [c.stem for c in cases] == ["liver_001", "liver_002"]
    assert cases[0].image_path.name == "liver_001_0000.nii.gz"
    assert cases[0].mask_path.name == "liver_001.nii.gz"
    assert cases[1].image_path.name == "liver_002.nii.gz"


def test_nnunet_dataset_json_names_classes(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    write_json(tmp_path / "dataset.json", {"labels": {"background": 0, "liver": 1, "tumour": 2}})
    assert class_names(tmp_path) == {0: "background", 1: "liver", 2: "tumour"}


def test_folder_of_neither_layout_names_the_expected_layouts(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(InputError, match="images/ \\+ masks/.*imagesTr/ \\+ labelsTr/") as info:
        dataset_cases(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(InputError, match="does not exist"):
        dataset_cases(tmp_path / "missing")


def test_classes_json(dataset):
    write_json(dataset / "classes.json", {"0": "background", "1": "tumour"})
    assert class_names(dataset) == {0: "background", 1: "tumour"}
    assert class_names(dataset / "images") == {}


def test_bad_json_is_an_input_error(dataset):
    (dataset / "splits.json").write_text("{not json")
    with pytest.raises(InputError, match="splits.json"):
        dataset_cases(dataset, "test")
    (dataset / "classes.json").write_text('["a"]')
    with pytest.raises(InputError, match="classes.json"):
        class_names(dataset)


def test_find_cases_does_not_read_pixels(tmp_path):
    write_case(tmp_path, "x", np.zeros((4, 4), np.uint8))
    (tmp_path / "images" / "x.png").write_bytes(b"garbage")
    assert [c.stem for c in dataset_cases(tmp_path)] == ["x"]
