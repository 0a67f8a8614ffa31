"""Simulated 3D clicks: the first at the object's deepest voxel (in mm), each next one into the largest
error region, positive for a miss and negative for a false alarm; boxes of a 3D mask."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.prompt_sim3d import box_3d, deepest_voxel, sample_click_3d
from medseg.errors import InputError


def ball(shape=(20, 30, 30), centre=(10, 15, 12), radius=6, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    d = ((zz - centre[0]) * spacing[0]) ** 2 + ((yy - centre[1]) * spacing[1]) ** 2 + ((xx - centre[2]) * spacing[2]) ** 2
    return d <= radius ** 2


def test_the_first_click_is_the_deepest_voxel_and_random_clicks_stay_inside():
    gt = ball()
    assert sample_click_3d(gt, None) == (10, 15, 12, 1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        z, y, x, label = sample_click_3d(gt, None, rng=rng)
        assert label == 1 and gt[z, y, x]


def test_depth_is_measured_in_millimetres():
    region = np.zeros((30, 30, 30), dtype=bool)
    region[:, 10:14, 10:14] = True   # a column 4 x 4 voxels wide, 30 slices long
    region[12:18, :, 20:] = True     # a plate 6 slices thick, 30 x 10 voxels wide
    assert deepest_voxel(region)[2] >= 20  # in voxels the plate is deeper (3 against 2)
    assert 10 <= deepest_voxel(region, spacing=(0.2, 1.0, 1.0))[2] < 14  # with 0.2 mm slices it is 0.6 mm deep


def test_corrective_clicks_go_into_the_largest_error_with_its_sign():
    gt = ball()
    miss = gt.copy()
    miss[:, :, 12:] = False  # half the ball missed: a positive click in the missed half
    z, y, x, label = sample_click_3d(gt, miss)
    assert label == 1 and gt[z, y, x] and not miss[z, y, x]
    spill = gt | ball(centre=(10, 15, 24), radius=5)  # a false alarm bigger than nothing missed
    z, y, x, label = sample_click_3d(gt, spill)
    assert label == 0 and spill[z, y, x] and not gt[z, y, x]
    assert sample_click_3d(gt, gt) is None


def test_bad_masks_are_clear_errors():
    with pytest.raises(InputError, match="empty"):
        sample_click_3d(np.zeros((4, 4, 4)), None)
    with pytest.raises(InputError, match="differs"):
        sample_click_3d(ball(), np.zeros((3, 3, 3)))
    with pytest.raises(InputError, match=r"\(Z, Y, X\)"):
        sample_click_3d(np.ones((4, 4)), None)


def test_a_3d_box_is_tight_and_jitter_stays_in_the_volume():
    gt = ball()
    assert box_3d(gt).tolist() == [4, 9, 6, 16, 21, 18]
    rng = np.random.default_rng(1)
    for _ in range(10):
        box = box_3d(gt, 0.5, rng)
        assert (box[:3] <= box[3:]).all() and (box >= 0).all() and (box[3:] < np.array(gt.shape)).all()
