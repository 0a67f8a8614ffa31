"""Supervised items are what the predictor sees, one object each; the epoch sampler splits exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.errors import InputError
from medseg.data.masks import components
from medseg.data.preprocess import prepare_image
from medseg.data.datasets import dataset_cases
from medseg.data.preprocess import label_frame
from medseg.train.datasets import EpochSampler, PromptedObjects

SIZE = 64


@pytest.fixture(scope="module")
def objects(dataset):
    return PromptedObjects(dataset_cases(dataset, "train"), SIZE, min_pixels=4)


def test_one_item_per_connected_component(objects, dataset):
    expected = 0
    for case in dataset_cases(dataset, "train"):
        frame = label_frame(np.asarray(Image.open(case.mask_path)), SIZE)
        expected += len(components(frame > 0, 4)[1])
    assert len(objects) == expected > len(objects.cases)  # some pictures hold two blobs


def test_item_is_the_predictors_input_with_one_object_and_its_box(objects):
    for index in range(len(objects)):
        item = objects[index]
        case = objects.cases[objects.items[index][0]]
        image, box, target = item["image"], item["box"], item["target"]
        x, record = prepare_image(np.asarray(Image.open(case.image_path)), SIZE)
        assert torch.equal(image, x[0])  # exactly the predictor's preprocessing
        assert image.shape == (3, SIZE, SIZE) and target.shape == (1, SIZE, SIZE) and box.shape == (4,)
        mask = target[0].numpy() > 0
        assert len(components(mask, 1)[1]) == 1  # one connected object
        assert not mask[record.resized_hw[0]:].any() and not mask[:, record.resized_hw[1]:].any()  # not in padding
        ys, xs = np.nonzero(mask)
        assert box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]  # tight, model-input pixels, inclusive


def test_label_is_resized_with_nearest_neighbour():
    label = np.zeros((40, 48), dtype=np.uint8)
    label[10:20, 12:30] = 2
    label[25:35, 5:10] = 7
    frame = label_frame(label, SIZE)
    assert frame.shape == (SIZE, SIZE) and set(np.unique(frame)) == {0, 2, 7}  # no blended values
    assert not frame[54:].any()  # 40 rows -> 53 rows, the rest is padding


def test_box_jitter_depends_on_seed_epoch_and_index_only(dataset):
    cases = dataset_cases(dataset, "train")
    a = PromptedObjects(cases, SIZE, 4, box_jitter=0.2, seed=1)
    b = PromptedObjects(cases, SIZE, 4, box_jitter=0.2, seed=1, cache=False)
    boxes = [a[i]["box"] for i in range(len(a))]
    assert all(torch.equal(boxes[i], b[i]["box"]) for i in reversed(range(len(b))))  # order-free
    a.set_epoch(1)
    assert not all(torch.equal(boxes[i], a[i]["box"]) for i in range(len(a)))
    for i in range(len(a)):
        x0, y0, x1, y1 = a[i]["box"].tolist()
        assert 0 <= x0 <= x1 <= SIZE - 1 and 0 <= y0 <= y1 <= SIZE - 1


@pytest.mark.parametrize("n, batch, world", [(10, 4, 2), (13, 6, 3), (8, 2, 1)])
def test_epoch_sampler_gives_the_same_global_batches_to_any_number_of_processes(n, batch, world):
    one = EpochSampler(n, batch, seed=3)
    parts = [EpochSampler(n, batch, seed=3, rank=r, world_size=world) for r in range(world)]
    for epoch in (0, 1):
        for s in [one, *parts]:
            s.set_epoch(epoch)
        order = list(one)
        local = [list(s) for s in parts]
        per = batch // world
        assert len(order) == (n // batch) * batch and all(len(x) == len(s) for x, s in zip(local, parts))
        for k in range(len(order) // batch):
            merged = sorted(i for x in local for i in x[k * per:(k + 1) * per])
            assert merged == sorted(order[k * batch:(k + 1) * batch])
    assert list(one) != (one.set_epoch(0) or list(one))  # a new order each epoch


def test_wrong_layout_and_empty_split_and_no_objects_are_input_errors(tmp_path, dataset):
    with pytest.raises(InputError, match="data.root"):
        dataset_cases(None, "train")
    (tmp_path / "pictures").mkdir()
    with pytest.raises(InputError, match=str(tmp_path)):
        dataset_cases(tmp_path, "train")
    with pytest.raises(InputError, match="nosuch"):
        dataset_cases(dataset, "nosuch")
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(empty / "images" / "a.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(empty / "masks" / "a.png")
    (empty / "splits.json").write_text(json.dumps({"train": ["a"], "val": []}))
    with pytest.raises(InputError, match="val"):
        dataset_cases(empty, "val")
    with pytest.raises(InputError, match="none of its 1 cases has an object"):
        PromptedObjects(dataset_cases(empty, "train"), SIZE, 4)


def test_augmented_items_keep_image_mask_and_box_together_and_repeat_by_seed(dataset):
    cases = dataset_cases(dataset, "train")
    plain = PromptedObjects(cases, 64, min_pixels=4)
    aug = PromptedObjects(cases, 64, min_pixels=4, augment=True, seed=3)
    again = PromptedObjects(cases, 64, min_pixels=4, augment=True, seed=3)
    changed = 0
    for i in range(len(aug)):
        a, b, p = aug[i], again[i], plain[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["box"], b["box"])
        assert a["image"].shape == p["image"].shape and 0 <= a["image"].min() and a["image"].max() <= 1
        ys, xs = np.nonzero(a["target"][0].numpy())
        assert a["box"].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]  # no jitter: the tight box
        changed += not torch.equal(a["target"], p["target"])
    assert changed > 0
    aug.set_epoch(1)
    assert any(not torch.equal(aug[i]["image"], again[i]["image"]) for i in range(len(aug)))


def test_an_epoch_can_be_capped_at_a_number_of_batches():
    from medseg.train.datasets import EpochSampler

    sampler = EpochSampler(20, 4, seed=1, max_batches=2)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert len(sampler) == len(first) == len(second) == 8
    assert first != second and len(set(first)) == 8  # a fresh random subset each epoch
    two = [EpochSampler(20, 4, seed=1, rank=r, world_size=2, max_batches=2) for r in (0, 1)]
    assert sorted(list(two[0]) + list(two[1])) == sorted(first)
