"""Dice / IoU / HD95 / NSD of binary masks, including the empty cases."""

import math

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.eval import case_metrics


def square(shape=(64, 64), y=10, x=10, side=20) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y : y + side, x : x + side] = True
    return mask


def test_dice_and_iou_match_hand_computation():
    gt = square()  # 400 px
    pred = square(x=15)  # 400 px, overlap 20 x 15 = 300
    m = case_metrics(pred, gt)
    assert m["dice"] == pytest.approx(2 * 300 / (400 + 400))
    assert m["iou"] == pytest.approx(300 / (400 + 400 - 300))


def test_hand_computed_dice_for_masks_of_different_size():
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[2:6, 2:6] = 255  # 16 px, non-zero is foreground
    pred = np.zeros((10, 10), dtype=bool)
    pred[2:4, 2:4] = True  # 4 px, all inside
    m = case_metrics(pred, gt)
    assert m["dice"] == pytest.approx(2 * 4 / 20)
    assert m["iou"] == pytest.approx(4 / 16)


def test_perfect_prediction():
    m = case_metrics(square(), square())
    assert m == pytest.approx({"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0})


def test_hd95_of_a_shifted_square_equals_the_shift():
    m = case_metrics(square(x=13), square(x=10))
    assert m["hd95"] == pytest.approx(3.0)
    assert 0.0 < m["nsd"] < 1.0
    assert case_metrics(square(x=13), square(x=10), tolerance=3.0)["nsd"] == pytest.approx(1.0)


def test_spacing_scales_distances_per_axis():
    pred, gt = square(x=13), square(x=10)  # shifted along columns (x)
    assert case_metrics(pred, gt, spacing=(2.0, 0.5))["hd95"] == pytest.approx(1.5)
    assert case_metrics(pred, gt, spacing=2.0)["hd95"] == pytest.approx(6.0)


def test_both_empty():
    empty = np.zeros((16, 16), dtype=bool)
    assert case_metrics(empty, empty) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0}


@pytest.mark.parametrize("which", ["pred", "gt"])
def test_one_empty(which):
    empty, full = np.zeros((64, 64), dtype=bool), square()
    pred, gt = (empty, full) if which == "pred" else (full, empty)
    m = case_metrics(pred, gt)
    assert (m["dice"], m["iou"], m["nsd"]) == (0.0, 0.0, 0.0)
    assert math.isnan(m["hd95"])


def test_3d_masks():
    gt = np.zeros((12, 32, 32), dtype=bool)
    gt[3:9, 8:24, 8:24] = True
    pred = np.roll(gt, 2, axis=2)
    m = case_metrics(pred, gt)
    assert m["dice"] == pytest.approx(2 * (6 * 16 * 14) / (2 * 6 * 16 * 16))
    assert m["hd95"] == pytest.approx(2.0)
    assert m["nsd"] == pytest.approx(1.0)


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="shape"):
        case_metrics(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(InputError, match="spacing"):
        case_metrics(square(), square(), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="2D"):
        case_metrics(np.zeros(5), np.zeros(5))
