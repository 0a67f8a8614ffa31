"""Prompt simulation: jittered boxes, clicks from errors, multi-round interaction, batched clicks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from evalkit import prompt_masks

from medseg.data.masks import dice
from medseg.data.prompt_sim import clicks_from_errors, sample_click, simulate_interaction, simulate_objects
from medseg.data.prompts import jitter_box
from medseg.errors import InputError


def disc(shape=(64, 64), centre=(32, 32), radius=14) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def rectangle(shape=(64, 64), y=(10, 30), x=(15, 50)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y[0]:y[1], x[0]:x[1]] = True
    return mask


class ClickPredictor:
    """Fake predictor: a box predicts the box filled; then each positive click adds, each negative
    click removes, a disc of radius 5. Its logits hold the call number, to trace ``mask_input``."""

    def __init__(self, size: int = 256):
        self.size, self.calls, self.shape = size, [], None

    def set_image(self, image):
        self.shape = image.shape[:2]

    def predict(self, box=None, points=None, point_labels=None, mask_input=None, multimask=False):
        self.calls.append({"box": box, "points": points, "point_labels": point_labels, "mask_input": mask_input,
                           "multimask": multimask})
        masks = prompt_masks(self.shape, box, points, point_labels, radius=5)
        n = len(masks)
        logits = np.full((n, 1, self.size, self.size), float(len(self.calls)), dtype=np.float32)
        return SimpleNamespace(masks=masks, scores=np.ones((n, 1)), logits=logits)


def test_jitter_box_stays_within_its_limits_and_the_image():
    box = np.array([10, 20, 49, 39], dtype=np.float32)  # 40 wide, 20 high
    for seed in range(20):
        out = jitter_box(box, np.random.default_rng(seed), 0.1, shape=(50, 52))
        assert out.shape == (4,) and out.dtype == np.float32
        assert np.all(np.abs(out - box) <= np.array([4, 2, 4, 2]) + 1e-5)  # 10% of width / height
        assert out[0] <= out[2] and out[1] <= out[3] and out.min() >= 0 and out[2] <= 51 and out[3] <= 49
    big = jitter_box(np.array([[0, 0, 399, 399]]), 1, 0.5, max_pixels=20)
    assert big.shape == (1, 4) and np.all(np.abs(big - [0, 0, 399, 399]) <= 20)
    assert np.array_equal(jitter_box(box, 3), jitter_box(box, 3))
    assert not np.array_equal(jitter_box(box, 3), jitter_box(box, 4))
    assert np.array_equal(jitter_box(box, 0, max_shift=0.0), box)


def test_jitter_box_expand_only_keeps_the_object_inside():
    boxes = np.array([[10, 10, 30, 40], [5, 6, 7, 8]], dtype=np.float32)
    for seed in range(10):
        out = jitter_box(boxes, seed, 0.2, expand_only=True, shape=(64, 64))
        assert (out[:, :2] <= boxes[:, :2]).all() and (out[:, 2:] >= boxes[:, 2:]).all()


def test_first_click_is_the_deepest_point_of_the_ground_truth():
    assert sample_click(disc(), None) == (32, 32, 1)
    x, y, label = sample_click(rectangle(), None)
    assert label == 1 and 15 <= x < 50 and 10 <= y < 30 and min(y - 10, 29 - y) >= 9
    with pytest.raises(InputError, match="empty"):
        sample_click(np.zeros((8, 8), bool), None)


def test_clicks_go_to_the_larger_error_with_the_right_sign():
    gt = rectangle()
    missed = gt.copy()
    missed[10:30, 15:30] = False  # a 20x15 false negative block
    x, y, label = sample_click(gt, missed)
    assert label == 1 and gt[y, x] and not missed[y, x]
    spilled = gt | rectangle(y=(40, 60), x=(5, 25))  # 20x20 false positive block
    spilled[10:13, 15:50] = False  # smaller false negative strip
    x, y, label = sample_click(gt, spilled)
    assert label == 0 and spilled[y, x] and not gt[y, x]
    assert abs(x - 14.5) <= 1 and abs(y - 49.5) <= 1  # the deepest pixel: the block's centre
    assert sample_click(gt, gt) is None


def test_a_tie_gives_the_positive_click():
    gt = np.zeros((20, 20), bool)
    gt[2:6, 2:6] = True
    pred = np.zeros((20, 20), bool)
    pred[12:16, 12:16] = True
    assert sample_click(gt, pred)[2] == 1


def test_random_clicks_lie_inside_the_error_and_follow_the_seed():
    gt, pred = disc(radius=20), disc(radius=10)
    clicks = [sample_click(gt, pred, np.random.default_rng(s)) for s in range(12)]
    assert all(label == 1 and gt[y, x] and not pred[y, x] for x, y, label in clicks)
    assert len(set(clicks)) > 3
    assert sample_click(gt, pred, 7) == sample_click(gt, pred, 7)


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError, match="differs"):
        sample_click(disc(), np.zeros((10, 10), bool))


def test_box_first_interaction_keeps_the_box_and_feeds_back_logits():
    gt, predictor = disc(), ClickPredictor()
    history = simulate_interaction(predictor, np.zeros((64, 64)), gt, rounds=4, first="box")
    assert len(history) == 4 and len(predictor.calls) == 4
    dices = [d for _, d in history]
    assert dices == sorted(dices) and dices[-1] > dices[0]
    assert all(p.shape == gt.shape and p.dtype == bool for p, _ in history)
    assert dices[0] == pytest.approx(dice(history[0][0], gt))
    first = predictor.calls[0]
    assert first["points"] is None and first["mask_input"] is None
    assert np.array_equal(first["box"], [[18, 18, 46, 46]])
    for k, call in enumerate(predictor.calls[1:], start=1):
        assert np.array_equal(call["box"], first["box"])
        assert call["points"].shape == (1, k, 2) and call["point_labels"].shape == (1, k)
        assert (call["point_labels"] == 0).all()  # the box's corners are false positives
        assert call["mask_input"].shape == (1, 1, 256, 256) and (call["mask_input"] == k).all()


def test_point_first_interaction_adds_clicks():
    gt, predictor = rectangle(), ClickPredictor()
    history = simulate_interaction(predictor, np.zeros((64, 64, 3)), gt, rounds=5, first="point")
    dices = [d for _, d in history]
    assert all(b > a for a, b in zip(dices, dices[1:]))
    assert predictor.calls[0]["box"] is None
    assert predictor.calls[0]["points"].tolist() == [[[32, 19]]]  # deepest pixel, nearest the centroid
    assert predictor.calls[-1]["points"].shape == (1, 5, 2)
    again = simulate_interaction(ClickPredictor(), np.zeros((64, 64)), gt, 5, "point", rng=np.random.default_rng(1))
    same = simulate_interaction(ClickPredictor(), np.zeros((64, 64)), gt, 5, "point", rng=np.random.default_rng(1))
    assert [d for _, d in again] == [d for _, d in same]


def test_a_perfect_round_is_repeated_without_a_new_prediction():
    gt, predictor = rectangle(), ClickPredictor()
    history = simulate_interaction(predictor, np.zeros((64, 64)), gt, rounds=3, first="box")
    assert [d for _, d in history] == [1.0, 1.0, 1.0] and len(predictor.calls) == 1


def test_interaction_arguments_are_checked():
    with pytest.raises(InputError, match="first"):
        simulate_interaction(ClickPredictor(), np.zeros((8, 8)), disc((8, 8), (4, 4), 2), 2, first="scribble")
    with pytest.raises(InputError, match="rounds"):
        simulate_interaction(ClickPredictor(), np.zeros((8, 8)), disc((8, 8), (4, 4), 2), 0)
    with pytest.raises(InputError, match="no foreground"):
        simulate_interaction(ClickPredictor(), np.zeros((8, 8)), np.zeros((8, 8)), 2)


def test_interaction_with_the_real_predictor_runs_all_rounds():
    from medseg.infer import Predictor
    from medseg.models import build_model

    torch.manual_seed(0)
    predictor = Predictor(build_model("litemedsam-tiny"), device="cpu")
    calls = []
    real_predict = predictor.predict

    def recording(**kwargs):
        out = real_predict(**kwargs)
        calls.append((kwargs, out))
        return out

    predictor.predict = recording
    image = np.random.default_rng(0).normal(0, 1, (40, 56)).astype(np.float32)
    gt = rectangle((40, 56), (8, 30), (10, 40))
    history = simulate_interaction(predictor, image, gt, rounds=3, first="point")
    assert len(history) == 3 and all(p.shape == (40, 56) and d == dice(p, gt) for p, d in history)
    (first, out0), *later = calls
    assert first["points"].tolist() == [[[24.0, 18.0]]] and first["point_labels"].tolist() == [[1]]  # deepest pixel
    assert "mask_input" not in first and "box" not in first
    previous = out0
    for k, (kwargs, out) in enumerate(later, start=2):  # each round: one more click, the last logits as mask
        assert kwargs["points"].shape == (1, k, 2) and kwargs["point_labels"].shape == (1, k)
        np.testing.assert_array_equal(kwargs["mask_input"], previous.logits[:, :1])
        x, y = kwargs["points"][0, -1].astype(int)
        wrong = history[k - 2][0] != gt  # the new click lies on an error of the round before
        assert wrong[y, x] and kwargs["point_labels"][0, -1] == int(gt[y, x])
        previous = out


def test_clicks_from_errors_batches_one_click_per_item():
    gt = torch.from_numpy(np.stack([disc(), disc(), disc(), np.zeros((64, 64), bool)]))
    pred = torch.from_numpy(np.stack([disc(radius=6), disc(radius=22), disc(), np.zeros((64, 64), bool)]))
    points, labels = clicks_from_errors(gt, pred.float())
    assert points.shape == (4, 1, 2) and points.dtype == torch.float32
    assert labels.shape == (4, 1) and labels.dtype == torch.int64
    assert labels[:, 0].tolist() == [1, 0, -1, -1]
    x, y = points[0, 0].long().tolist()
    assert gt[0, y, x] and not pred[0, y, x]
    x, y = points[1, 0].long().tolist()
    assert pred[1, y, x] and not gt[1, y, x]
    first_points, first_labels = clicks_from_errors(gt[:, None], None)
    assert first_labels[:, 0].tolist() == [1, 1, 1, -1] and first_points[0, 0].tolist() == [32.0, 32.0]
    a = clicks_from_errors(gt, pred, np.random.default_rng(5))
    b = clicks_from_errors(gt, pred, np.random.default_rng(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(InputError, match="differ"):
        clicks_from_errors(gt, pred[:, :10])


def test_only_a_lone_first_click_asks_for_the_multimask_candidates():
    from medseg.data.prompts import is_lone_click

    gt = np.zeros((64, 64), dtype=bool)
    gt[10:40, 10:40] = True
    gt[25:40, 25:40] = False  # an L: its box and single discs both leave errors to click on
    for first, expected in (("point", [True, False, False]), ("box", [False, False, False])):
        predictor = ClickPredictor()
        simulate_interaction(predictor, np.zeros((64, 64)), gt, rounds=3, first=first)
        assert [c["multimask"] for c in predictor.calls] == expected
    assert is_lone_click(None, [[3, 4]], None) and is_lone_click(None, np.zeros((5, 1, 2)), None)  # 5 objects
    assert not is_lone_click([0, 0, 5, 5], [[3, 4]], None) and not is_lone_click(None, np.zeros((1, 2, 2)), None)
    assert not is_lone_click(None, [[3, 4]], np.zeros((1, 1, 8, 8))) and not is_lone_click(None, None, None)


def test_objects_of_one_image_are_clicked_each_on_its_own_in_one_call_per_round():
    a, b = np.zeros((64, 64), dtype=bool), np.zeros((64, 64), dtype=bool)
    a[5:20, 5:20] = True  # a square: its box fills it at once, then nothing is left to click
    b[30:60, 30:60] = True
    b[45:60, 45:60] = False  # an L: its box overshoots, so it is clicked every round
    predictor = ClickPredictor()
    together = simulate_objects(predictor, np.zeros((64, 64)), [a, b], rounds=3, first="box")
    assert len(predictor.calls) == 3  # one batched call per round
    assert [len(c["box"]) for c in predictor.calls] == [2, 1, 1]  # the finished square drops out
    assert predictor.calls[2]["points"].shape == (1, 2, 2) and predictor.calls[2]["mask_input"].shape == (1, 1, 256, 256)
    assert [d for _, d in together[0]] == [1.0, 1.0, 1.0]
    for gt, history in zip((a, b), together):
        alone = simulate_interaction(ClickPredictor(), np.zeros((64, 64)), gt, rounds=3, first="box")
        assert [d for _, d in history] == [d for _, d in alone]
