"""3D patch augmentation: the drawn parameters describe the fixed transform exactly; the identity
geometry resampled equals the plain crop; quarter turns and mirroring move voxels where they should."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.data.augment3d import RandomPatch3D, crop_patch, extract_patch, rotation_matrix


def identity(**changes) -> dict:
    params = {"angles": [0.0, 0.0, 0.0], "scale": 1.0, "elastic": None, "flips": [], "brightness": 1.0,
              "contrast": 1.0, "gamma": 1.0, "noise_std": 0.0, "noise_seed": 0}
    params.update(changes)
    return params


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 14, 17, 15)).astype(np.float32)
    label = rng.integers(0, 3, size=(14, 17, 15)).astype(np.int64)
    return image, label


@pytest.mark.parametrize("centre", [(7, 8, 7), (1, 2, 13)])  # inside, and past two edges
@pytest.mark.parametrize("flips", [[], [0, 2]])
def test_resampling_with_the_identity_geometry_is_the_plain_crop(volume, centre, flips):
    image, label = volume
    plain = extract_patch(image, label, centre, (8, 6, 7), identity(flips=flips))
    resampled = extract_patch(image, label, centre, (8, 6, 7), identity(flips=flips, elastic=np.zeros((3, 4, 4, 4),
                                                                                                     np.float32)))
    np.testing.assert_allclose(resampled[0], plain[0], atol=1e-5)
    np.testing.assert_array_equal(resampled[1], plain[1])
    crop = crop_patch(label, centre, (8, 6, 7))
    np.testing.assert_array_equal(plain[1], np.flip(crop, flips) if flips else crop)


def test_a_quarter_turn_in_plane_is_a_rot90_of_the_crop(volume):
    image, label = volume
    turned = extract_patch(image, label, (7, 8, 7), (5, 7, 7), identity(angles=[math.pi / 2, 0.0, 0.0]))[1]
    crop = crop_patch(label, (7, 8, 7), (5, 7, 7))
    assert any(np.array_equal(turned, np.rot90(crop, k, axes=(1, 2))) for k in (1, -1))
    assert not np.array_equal(turned, crop)


def test_rotation_matrices_are_rotations():
    r = rotation_matrix([0.3, -0.2, 1.1])
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)


def test_draws_are_reproducible_and_thick_slice_plans_rotate_in_plane_only():
    rng = lambda: np.random.default_rng([3, 1])  # noqa: E731
    augment = RandomPatch3D(p_rotate=1, p_elastic=1, in_plane_axis=0)
    a, b = augment.draw(rng()), augment.draw(rng())
    assert a["angles"] == b["angles"] and np.array_equal(a["elastic"], b["elastic"])
    assert a["angles"][0] != 0 and a["angles"][1:] == [0.0, 0.0] and not a["elastic"][0].any()
    assert all(v != 0 for v in RandomPatch3D(p_rotate=1).draw(rng())["angles"])


def test_intensity_changes_only_the_image_and_zoom_keeps_the_shapes(volume):
    image, label = volume
    params = identity(brightness=1.2, gamma=1.4, noise_std=0.05, noise_seed=5)
    x, y = extract_patch(image, label, (7, 8, 7), (6, 6, 6), params)
    x0, y0 = extract_patch(image, label, (7, 8, 7), (6, 6, 6), identity())
    assert x.dtype == np.float32 and not np.allclose(x, x0)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(x, extract_patch(image, label, (7, 8, 7), (6, 6, 6), params)[0])
    zx, zy = extract_patch(image, label, (7, 8, 7), (6, 6, 6), identity(scale=1.3, angles=[0.2, 0.1, 0.0]))
    assert zx.shape == (1, 6, 6, 6) and zy.shape == (6, 6, 6) and set(np.unique(zy)) <= {0, 1, 2}
