"""Predictor with the tiny random model: shapes, prompt frames, batching, and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.infer import Prediction, Predictor

# Boxes (x0, y0, x1, y1) in pixels of the 50 x 80 (H x W) test image.
BOXES = np.array([[5, 5, 30, 40], [10, 0, 79, 49], [40, 10, 60, 20], [0, 0, 10, 10], [20, 20, 70, 45]], float)


@pytest.fixture
def ready(predictor, image_50x80) -> Predictor:
    predictor.set_image(image_50x80)
    return predictor


def _check_prediction(pred: Prediction, n: int, m: int, hw: tuple[int, int], size: int = 64) -> None:
    assert isinstance(pred, Prediction)
    assert pred.masks.shape == (n, m, *hw) and pred.masks.dtype == bool
    assert pred.scores.shape == (n, m) and np.isfinite(pred.scores).all()
    assert pred.logits.shape == (n, m, size, size) and np.isfinite(pred.logits).all()


# ---------------------------------------------------------------- shapes and frames


@pytest.mark.parametrize("hw", [(50, 80), (80, 50), (64, 64), (130, 37)])
@pytest.mark.parametrize("multimask", [False, True])
def test_masks_at_input_resolution(predictor, hw, multimask):
    h, w = hw
    img = np.random.default_rng(0).random(hw).astype(np.float32)
    predictor.set_image(img)
    assert predictor.image_hw == hw
    pred = predictor.predict(box=[w * 0.2, h * 0.2, w * 0.7, h * 0.8], multimask=multimask)
    _check_prediction(pred, 1, 3 if multimask else 1, hw)


def test_rgb_and_grey_inputs(predictor):
    rgb = np.random.default_rng(1).integers(0, 255, (40, 70, 3)).astype(np.uint8)
    predictor.set_image(rgb)
    _check_prediction(predictor.predict(box=[5, 5, 50, 30]), 1, 1, (40, 70))
    predictor.set_image(rgb[..., 0])
    _check_prediction(predictor.predict(box=[5, 5, 50, 30]), 1, 1, (40, 70))


def test_predict_matches_model_in_scaled_frame(ready, tiny_model):
    """Prompts are scaled by size / max(H, W) into the model frame; masks are the thresholded upsampled
    logits. Checked against the model called directly."""
    scale = 64 / 80
    box = BOXES[0]
    pts, labels = np.array([[12.0, 20.0], [60.0, 40.0]]), np.array([1, 0])
    pred = ready.predict(box=box, points=pts, point_labels=labels)
    with torch.no_grad():
        low, iou = tiny_model.decode(ready.embedding, boxes=torch.tensor(box[None] * scale, dtype=torch.float32),
                                     points=(torch.tensor(pts[None] * scale, dtype=torch.float32),
                                             torch.tensor(labels[None])))
        full = torch.nn.functional.interpolate(low[..., :40, :64], size=(50, 80), mode="bilinear",
                                               align_corners=False)
    np.testing.assert_allclose(pred.logits, low.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pred.scores, iou.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pred.masks, (full > 0).numpy())


def test_masks_are_not_trivial(ready):
    """The random tiny model gives partial masks here, so the equality tests below mean something."""
    frac = ready.predict(box=BOXES).masks.mean(axis=(1, 2, 3))
    assert np.all((frac > 0.05) & (frac < 0.95)), frac


def test_predict_before_set_image_is_an_error(predictor):
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(box=[0, 0, 5, 5])


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize("batch_size", [32, 2, 1])
def test_batched_boxes_equal_one_by_one(tiny_model, image_50x80, batch_size):
    one = Predictor(tiny_model, device="cpu")
    one.set_image(image_50x80)
    singles = [one.predict(box=b, multimask=True) for b in BOXES]

    many = Predictor(tiny_model, device="cpu", batch_size=batch_size)
    many.set_image(image_50x80)
    batched = many.predict(box=BOXES, multimask=True)
    _check_prediction(batched, len(BOXES), 3, (50, 80))
    for i, single in enumerate(singles):
        np.testing.assert_allclose(batched.logits[i:i + 1], single.logits, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(batched.scores[i:i + 1], single.scores, rtol=1e-4, atol=1e-4)
        # a mask pixel may only differ where the logit is ~0
        full_differs = batched.masks[i:i + 1] != single.masks
        assert full_differs.mean() < 1e-3, f"object {i}: {full_differs.sum()} mask pixels differ"


def test_batched_points_equal_one_by_one(tiny_model, image_50x80):
    pts = np.array([[[10, 10], [30, 40]], [[60, 20], [70, 45]], [[5, 45], [40, 25]]], float)
    labels = np.array([[1, 0], [1, 1], [0, 1]])
    p = Predictor(tiny_model, device="cpu", batch_size=2)
    p.set_image(image_50x80)
    batched = p.predict(points=pts, point_labels=labels)
    for i in range(len(pts)):
        single = p.predict(points=pts[i], point_labels=labels[i])
        np.testing.assert_allclose(batched.logits[i:i + 1], single.logits, rtol=1e-4, atol=1e-4)


def test_box_and_points_per_object(ready):
    pts = BOXES[:, None, :2] + 2.0  # one click per object, near its box corner
    pred = ready.predict(box=BOXES, points=pts)
    _check_prediction(pred, len(BOXES), 1, (50, 80))
    assert not np.allclose(pred.logits, ready.predict(box=BOXES).logits)


def test_default_point_labels_are_positive(ready):
    pts = np.array([[20.0, 25.0], [50.0, 30.0]])
    a = ready.predict(points=pts)
    b = ready.predict(points=pts, point_labels=[1, 1])
    c = ready.predict(points=pts, point_labels=[1, 0])
    np.testing.assert_array_equal(a.logits, b.logits)
    assert not np.allclose(a.logits, c.logits)


# ---------------------------------------------------------------- mask input and cached embeddings


def test_mask_input_from_previous_logits(ready):
    first = ready.predict(box=BOXES)
    again = ready.predict(box=BOXES, mask_input=first.logits)
    _check_prediction(again, len(BOXES), 1, (50, 80))
    assert not np.allclose(again.logits, first.logits), "mask_input had no effect"
    alone = ready.predict(mask_input=first.logits[:1])
    _check_prediction(alone, 1, 1, (50, 80))
    alone3d = ready.predict(mask_input=first.logits[0])
    np.testing.assert_allclose(alone3d.logits, alone.logits, rtol=1e-5, atol=1e-5)


def test_single_mask_input_is_shared_by_all_objects(tiny_model, image_50x80):
    """A (1, S, S) mask_input applies to every object, also across batches smaller than N."""
    p = Predictor(tiny_model, device="cpu", batch_size=2)
    p.set_image(image_50x80)
    mask = p.predict(box=BOXES[0]).logits[0]  # (1, S, S)
    shared = p.predict(box=BOXES, mask_input=mask)
    repeated = p.predict(box=BOXES, mask_input=np.repeat(mask[None], len(BOXES), axis=0))
    np.testing.assert_allclose(shared.logits, repeated.logits, rtol=1e-5, atol=1e-5)


def test_set_embedding_reuse_equals_set_image(tiny_model, image_50x80):
    a = Predictor(tiny_model, device="cpu")
    a.set_image(image_50x80)
    cached = a.embedding.clone()
    b = Predictor(tiny_model, device="cpu")
    b.set_embedding(cached, image_50x80.shape)
    assert b.image_hw == (50, 80)
    assert b.record == a.record
    pa = a.predict(box=BOXES, multimask=True)
    pb = b.predict(box=BOXES, multimask=True)
    np.testing.assert_array_equal(pa.masks, pb.masks)
    np.testing.assert_array_equal(pa.logits, pb.logits)
    np.testing.assert_array_equal(pa.scores, pb.scores)


# ---------------------------------------------------------------- boxes reaching outside


@pytest.mark.parametrize("box, clipped", [
    ([-10, -5, 30, 200], [0, 0, 30, 49]),
    ([50, 20, 500, 40], [50, 20, 79, 40]),
    ([-1e3, -1e3, 1e3, 1e3], [0, 0, 79, 49]),
])
def test_box_partly_outside_is_clipped(ready, box, clipped):
    a = ready.predict(box=box)
    b = ready.predict(box=clipped)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_box_on_the_last_pixel_is_inside(ready):
    _check_prediction(ready.predict(box=[79, 49, 79, 49]), 1, 1, (50, 80))
    _check_prediction(ready.predict(box=[0, 0, 0, 0]), 1, 1, (50, 80))


# ---------------------------------------------------------------- input errors


@pytest.mark.parametrize("box", [
    [30, 5, 10, 40],     # x1 < x0
    [5, 40, 30, 10],     # y1 < y0
], ids=["x-inverted", "y-inverted"])
def test_inverted_box(ready, box):
    with pytest.raises(InputError, match="inverted"):
        ready.predict(box=box)


@pytest.mark.parametrize("box", [
    [-20, 5, -1, 40],    # left of the image
    [80, 5, 100, 40],    # right of it (x0 > W - 1)
    [5, -30, 30, -0.5],  # above
    [5, 50, 30, 60],     # below (y0 > H - 1)
])
def test_box_wholly_outside(ready, box):
    with pytest.raises(InputError, match="outside the image of 80x50"):
        ready.predict(box=box)


def test_one_bad_box_among_many(ready):
    boxes = np.concatenate([BOXES, [[100, 100, 120, 120]]])
    with pytest.raises(InputError, match="outside"):
        ready.predict(box=boxes)


@pytest.mark.parametrize("box", [[1, 2, 3], [[1, 2, 3, 4, 5]], [0, 0, np.nan, 10], [0, np.inf, 5, 10]],
                         ids=["3-numbers", "5-numbers", "nan", "inf"])
def test_malformed_box(ready, box):
    with pytest.raises(InputError, match="box"):
        ready.predict(box=box)


@pytest.mark.parametrize("point", [[-1, 10], [80, 10], [10, 50], [10, -0.1], [1e4, 1e4]])
def test_point_outside(ready, point):
    with pytest.raises(InputError, match="outside"):
        ready.predict(points=[point])


@pytest.mark.parametrize("points", [[1, 2], [[1, 2, 3]], [[[[1, 2]]]], [[np.nan, 2]]],
                         ids=["flat", "3-coords", "4d", "nan"])
def test_malformed_points(ready, points):
    with pytest.raises(InputError, match="points"):
        ready.predict(points=points)


@pytest.mark.parametrize("labels", [[2], [-1], [5]])
def test_bad_point_labels(ready, labels):
    with pytest.raises(InputError, match="point_labels"):
        ready.predict(points=[[10, 10]], point_labels=labels)


def test_point_labels_count_mismatch(ready):
    with pytest.raises(InputError, match="point_labels"):
        ready.predict(points=[[10, 10], [20, 20]], point_labels=[1, 0, 1])


def test_mismatched_object_counts(ready):
    with pytest.raises(InputError, match=r"disagree.*\[2, 3\]"):
        ready.predict(box=BOXES[:3], points=np.full((2, 1, 2), 10.0))
    logits = ready.predict(box=BOXES[:2]).logits
    with pytest.raises(InputError, match="disagree"):
        ready.predict(box=BOXES[:3], mask_input=logits)


def test_no_prompt(ready):
    with pytest.raises(InputError, match="at least one prompt"):
        ready.predict()


def test_multimask_logits_as_mask_input_is_an_input_error(ready):
    logits = ready.predict(box=BOXES[0], multimask=True).logits  # (1, 3, S, S)
    with pytest.raises(InputError, match="mask_input"):
        ready.predict(box=BOXES[0], mask_input=logits)


def test_volume_given_to_set_image(predictor):
    with pytest.raises(InputError, match="segment_volume"):
        predictor.set_image(np.zeros((5, 40, 40), np.float32))


@pytest.mark.parametrize("prompt", [dict(box=np.zeros((0, 4))), dict(points=np.zeros((0, 1, 2)))],
                         ids=["boxes", "points"])
def test_zero_objects(ready, prompt):
    try:
        pred = ready.predict(**prompt)
    except InputError:
        return
    _check_prediction(pred, 0, 1, (50, 80))


def test_a_prefetched_image_is_not_encoded_again(tiny_model, image_50x80):
    predictor = Predictor(tiny_model, device="cpu")
    predictor.set_image(image_50x80)
    alone = predictor.embedding.clone()
    other = image_50x80[::-1].copy()
    predictor.prefetch([other, image_50x80])
    predictor.model.encode_features = None  # any encoder call would fail now
    try:
        predictor.set_image(image_50x80)
    finally:
        del predictor.model.encode_features
    assert predictor.image_hw == (50, 80)
    np.testing.assert_allclose(predictor.embedding.numpy(), alone.numpy(), atol=1e-5)
    predictor.set_image(image_50x80)  # taken once: encoded as usual the second time
