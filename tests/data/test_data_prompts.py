"""Prompts from ground-truth masks: components, tight boxes, deepest clicks."""

import numpy as np
import pytest
from scipy import ndimage

from medseg.errors import InputError
from medseg.data.masks import components
from medseg.data.prompts import boxes_from_mask, points_from_mask


def two_blobs_and_speck() -> np.ndarray:
    mask = np.zeros((60, 80), dtype=np.uint8)
    mask[5:15, 10:30] = 1  # 200 px
    mask[30:50, 40:70] = 1  # 600 px
    mask[55:56, 0:5] = 1  # 5 px speck: no prompt
    return mask


def test_two_blobs_and_a_speck_give_two_tight_inclusive_boxes():
    boxes = boxes_from_mask(two_blobs_and_speck())
    assert boxes.shape == (2, 4)
    np.testing.assert_array_equal(boxes, [[10, 5, 29, 14], [40, 30, 69, 49]])


def test_points_follow_the_box_order_and_lie_inside_their_component():
    mask = two_blobs_and_speck()
    points = points_from_mask(mask)
    assert points.shape == (2, 2)
    for (x, y), (x0, y0, x1, y1) in zip(points, boxes_from_mask(mask)):
        assert x0 <= x <= x1 and y0 <= y <= y1
        assert mask[int(y), int(x)]


def test_click_is_the_deepest_point_in_the_centre_region_of_a_rectangle():
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:20, 15:45] = True  # 10 rows x 30 columns, centre (x, y) = (29.5, 14.5)
    (x, y), = points_from_mask(mask)
    depth = ndimage.distance_transform_edt(mask)
    assert depth[int(y), int(x)] == depth.max()
    assert abs(x - 29.5) <= 1 and abs(y - 14.5) <= 1


def test_image_edge_counts_as_border():
    mask = np.zeros((30, 30), dtype=bool)
    mask[0:9, 0:30] = True  # touches top, left and right edges
    (x, y), = points_from_mask(mask)
    assert y == 4 and 13 <= x <= 16


def test_click_of_a_ring_shaped_component_is_on_the_ring():
    mask = np.zeros((50, 50), dtype=bool)
    mask[5:45, 5:45] = True
    mask[12:38, 12:38] = False  # centroid is in the hole
    (x, y), = points_from_mask(mask)
    assert mask[int(y), int(x)]


def test_points_are_deterministic():
    mask = two_blobs_and_speck()
    np.testing.assert_array_equal(points_from_mask(mask), points_from_mask(mask.copy()))


def test_diagonal_neighbours_are_one_component():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:7, 2:7] = True
    mask[7:12, 7:12] = True  # touches only at a corner
    _, kept = components(mask)
    assert len(kept) == 1
    np.testing.assert_array_equal(boxes_from_mask(mask), [[2, 2, 11, 11]])


def test_min_size_is_inclusive_and_adjustable():
    mask = np.zeros((20, 20), dtype=bool)
    mask[0:4, 0:5] = True  # exactly 20 px
    assert len(boxes_from_mask(mask)) == 1
    assert len(boxes_from_mask(mask, min_size=21)) == 0


def test_empty_mask_gives_no_prompts():
    mask = np.zeros((10, 10))
    assert boxes_from_mask(mask).shape == (0, 4)
    assert points_from_mask(mask).shape == (0, 2)


def test_non_2d_mask_is_refused():
    with pytest.raises(InputError, match="2D"):
        boxes_from_mask(np.zeros((2, 10, 10)))
