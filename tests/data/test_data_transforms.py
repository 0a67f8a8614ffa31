"""Training transforms: geometry keeps image, mask, boxes and points together; seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.data import augment as A
from medseg.data import transforms as T
from medseg.errors import InputError

LABELS = {0, 2, 7}


def square_sample(h: int = 48, w: int = 64, channels: int = 3) -> dict:
    """Bright off-centre rectangle (label 2) and a small block (label 7) on a dark image."""
    image = np.zeros((channels, h, w), dtype=np.float32)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[8:24, 12:36] = 2
    mask[30:38, 44:52] = 7
    image[:, mask > 0] = 1.0
    boxes = np.array([[12, 8, 35, 23], [44, 30, 51, 37]], dtype=np.float32)
    points = np.array([[[20, 15], [30, 10]], [[47, 33], [49, 35]]], dtype=np.float32)
    labels = np.ones((2, 2), dtype=np.int64)
    return {"image": image, "mask": mask, "boxes": boxes, "points": points, "point_labels": labels}


def mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)


def border_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of the mask's boundary (inside or outside)."""
    inner = ndimage.binary_erosion(mask, iterations=width)
    outer = ndimage.binary_dilation(mask, iterations=width)
    return outer & ~inner


EXACT = [T.Flip(horizontal=True), T.Flip(vertical=True), T.Flip(True, True), T.Rot90(1), T.Rot90(2), T.Rot90(3)]
RESAMPLED = [T.Affine(30.0, 1.0), T.Affine(-70.0, 1.1), T.Affine(0.0, 1.4), T.Affine(0.0, 0.7)]


@pytest.mark.parametrize("transform", EXACT + RESAMPLED, ids=lambda t: type(t).__name__ + str(vars(t)))
def test_mask_stays_on_the_bright_region(transform):
    out = transform(square_sample())
    assert out["image"].dtype == np.float32 and out["image"].shape[1:] == out["mask"].shape
    assert out["mask"].dtype == np.uint8
    bright, labelled = out["image"][0] > 0.5, out["mask"] > 0
    assert labelled.any()
    wrong = bright != labelled
    assert not (wrong & ~border_band(labelled, 1)).any(), "misaligned beyond border pixels"
    if transform in EXACT:
        assert not wrong.any()
    assert np.allclose(out["image"][0], out["image"][2])  # channels moved together


@pytest.mark.parametrize("transform", EXACT + RESAMPLED, ids=lambda t: type(t).__name__ + str(vars(t)))
def test_labels_keep_their_value_set(transform):
    out = transform(square_sample())
    assert set(np.unique(out["mask"]).tolist()) <= LABELS


@pytest.mark.parametrize("transform", EXACT,
                         ids=lambda t: type(t).__name__ + str(vars(t)))
def test_boxes_and_points_follow_the_object(transform):
    out = transform(square_sample())
    for row, label in enumerate((2, 7)):
        assert np.abs(mask_box(out["mask"] == label) - out["boxes"][row]).max() <= 2
        for x, y in np.round(out["points"][row]).astype(int):
            assert out["mask"][y, x] == label
    assert (out["point_labels"] == 1).all()


@pytest.mark.parametrize("transform", [T.Affine(30.0, 1.0), T.Affine(-45.0, 0.8)],
                         ids=lambda t: type(t).__name__ + str(vars(t)))
def test_boxes_enclose_the_object_after_rotation_and_warps(transform):
    out = transform(square_sample())
    for row, label in enumerate((2, 7)):
        tight, box = mask_box(out["mask"] == label), out["boxes"][row]
        assert (box[:2] <= tight[:2] + 1.5).all() and (box[2:] >= tight[2:] - 1.5).all()
        x, y = np.round(out["points"][row, 0]).astype(int)
        assert out["mask"][y, x] == label


def test_affine_quarter_turn_agrees_with_rot90():
    sample = square_sample(48, 48)
    turned, rotated = T.Rot90(1)(sample), T.Affine(90.0)(sample)
    assert np.array_equal(turned["mask"], rotated["mask"])
    assert np.allclose(turned["boxes"], rotated["boxes"], atol=1e-4)
    assert np.allclose(turned["points"], rotated["points"], atol=1e-4)


def test_points_that_leave_the_image_are_clipped_and_dropped():
    sample = square_sample()
    sample["points"] = np.array([[[1, 1], [32, 24]]], dtype=np.float32)
    sample["point_labels"] = np.array([[1, 0]])
    sample["boxes"] = np.array([[0, 0, 5, 5]], dtype=np.float32)
    out = T.Affine(0.0, 3.0)(sample)  # zoom in 3x about the centre: the corner leaves the image
    h, w = out["mask"].shape
    assert out["point_labels"].tolist() == [[-1, 0]]
    assert (out["points"] >= 0).all() and (out["points"] <= [w - 1, h - 1]).all()
    assert (out["boxes"] >= 0).all() and (out["boxes"][:, [0, 2]] <= w - 1).all()
    no_labels = {k: v for k, v in sample.items() if k != "point_labels"}
    assert "point_labels" not in T.Affine(0.0, 3.0)(no_labels)


def test_rot90_swaps_height_and_width_and_input_is_untouched():
    sample = square_sample(30, 50)
    before = {k: v.copy() for k, v in sample.items()}
    out = T.Rot90(1)(sample)
    assert out["image"].shape == (3, 50, 30) and out["mask"].shape == (50, 30)
    for key, value in before.items():
        assert np.array_equal(sample[key], value)


def test_intensity_transforms_leave_mask_and_prompts_untouched():
    sample = square_sample()
    sample["image"] = sample["image"] * 300.0 - 100.0  # -100 .. 200
    for transform in (T.Intensity(shift=0.1, factor=1.2, gamma=0.8, std=0.05, seed=1, clip=(0, 1)),
                      T.Intensity(factor=0.5)):
        out = transform(sample)
        for key in ("mask", "boxes", "points", "point_labels"):
            assert np.array_equal(out[key], sample[key])
        assert not np.array_equal(out["image"], sample["image"])
    random = A.RandomIntensity(p=1.0)
    out = random(sample, np.random.default_rng(0))
    assert np.array_equal(out["mask"], sample["mask"])


def test_random_transform_is_draw_then_fixed():
    sample = square_sample()
    for random in (A.RandomFlip(), A.RandomRot90(1.0), A.RandomAffine(p=1.0),
                   A.RandomIntensity(p=1.0)):
        params = random.draw(np.random.default_rng(11))
        direct = random(sample, np.random.default_rng(11))
        fixed = random.fixed_class(**params)(sample)
        for key in ("image", "mask", "boxes", "points"):
            assert np.array_equal(direct[key], fixed[key])


def outputs(pipeline: A.Compose, sample: dict, n: int = 4) -> list[dict]:
    return [pipeline(sample) for _ in range(n)]


def test_same_seed_same_output_different_seed_differs():
    sample = square_sample()
    a = outputs(A.Compose(A.train_augmentation().transforms, seed=5), sample)
    b = outputs(A.Compose(A.train_augmentation().transforms, seed=5), sample)
    c = outputs(A.Compose(A.train_augmentation().transforms, seed=6), sample)
    for x, y in zip(a, b):
        for key in ("image", "mask", "boxes", "points", "point_labels"):
            assert np.array_equal(x[key], y[key])
    assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))
    assert not all(np.array_equal(a[0]["image"], x["image"]) for x in a[1:])  # the generator moves on


def test_compose_draw_and_fixed_replay_a_run():
    pipeline = A.train_augmentation()
    params = pipeline.draw(np.random.default_rng(3))
    replay = pipeline.fixed(params)(square_sample())
    direct = pipeline(square_sample(), np.random.default_rng(3))
    assert np.array_equal(replay["image"], direct["image"]) and np.array_equal(replay["mask"], direct["mask"])


def test_the_training_pipeline_keeps_model_ready_samples_model_ready():
    pipeline = A.train_augmentation()
    for seed in range(5):
        out = pipeline(square_sample(64, 64, channels=3), np.random.default_rng(seed))
        assert out["image"].shape == (3, 64, 64) and out["mask"].shape == (64, 64)
        assert out["image"].min() >= 0.0 and out["image"].max() <= 1.0
        assert set(np.unique(out["mask"]).tolist()) <= LABELS


def test_channels_last_image_is_refused_with_a_hint():
    sample = square_sample()
    sample["image"] = np.moveaxis(sample["image"], 0, -1)
    with pytest.raises(InputError, match="transpose"):
        T.Flip(True)(sample)
