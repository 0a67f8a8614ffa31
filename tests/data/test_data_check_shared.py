"""The real datasets of ../shared/data: every folder with a split file opens; kvasir_seg checks ok."""

import pytest

from medseg.data import check_dataset, detect_layout, open_dataset

pytestmark = pytest.mark.data


def test_every_shared_folder_with_splits_opens(shared_data):
    folders = sorted(p for p in shared_data.iterdir() if (p / "splits.json").is_file())
    assert len(folders) >= 7, folders  # the seven sets of INDEX.md with a train/val/test split
    for root in folders:
        spec = open_dataset(root)
        assert detect_layout(root) == "paired" and spec.has_split_file, root
        assert {"train", "val", "test"} <= set(spec.splits), root
        stems = set()
        for split in ("train", "val", "test"):
            samples = spec.samples(split)
            assert samples and all(s.mask_path is not None for s in samples), (root, split)
            stems |= {s.stem for s in samples}
        assert stems == set(spec.scan().samples), root  # the splits cover every pair
        assert not spec.scan().unpaired_images and not spec.scan().unpaired_labels, root


def test_every_labelled_shared_folder_opens(shared_data):
    for root in sorted(p for p in shared_data.iterdir() if p.is_dir() and p.name != "unlabeled"):
        assert open_dataset(root, warn=False).samples("all", labelled=True), root


def test_shared_class_files(shared_data):
    assert open_dataset(shared_data / "ct_organ_slices_demo").classes[1] == "aorta"
    spec = open_dataset(shared_data / "totalseg_example_3d")
    assert spec.sources["classes"] == "labels.json" and spec.classes[1] == "spleen"


def test_kvasir_seg_checks_ok(shared_data):
    report = check_dataset(shared_data / "kvasir_seg", max_cases=10, progress=False)
    assert report.ok, report.format()
    assert report.n_checked == 10 and report.n_samples == 300
    assert set(report.label_values) <= {0, 255}
