"""LiteMedSAM preprocessing: intensity windows, channels, longest-side resize, min-max, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.data.preprocess import (MODALITY_WINDOWS, Resized, apply_intensity_window, logits_to_input_size,
                                     longest_side_shape, prepare_image)


def _noise(shape, seed=0, scale=100.0):
    return (np.random.default_rng(seed).random(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("hw, size, expected", [
    ((100, 300), 256, (85, 256)),
    ((300, 100), 256, (256, 85)),
    ((256, 256), 256, (256, 256)),
    ((32, 64), 256, (128, 256)),       # upscaling
    ((1, 1000), 256, (1, 256)),        # never a zero side
    ((50, 80), 64, (40, 64)),
])
def test_longest_side_shape(hw, size, expected):
    assert longest_side_shape(hw, size) == expected


def test_prepare_non_square_resizes_longest_side_and_pads_below():
    x, record = prepare_image(_noise((100, 300)) + 5.0, 256)
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32
    assert record == Resized((100, 300), (85, 256), 256)
    assert record.scale == pytest.approx(256 / 300)
    assert torch.all(x[..., 85:, :] == 0), "rows below the resized image must be zero padding"
    region = x[..., :85, :]
    assert region.min().item() == pytest.approx(0.0, abs=1e-6)
    assert region.max().item() == pytest.approx(1.0, abs=1e-6)


def test_prepare_tall_image_pads_right():
    x, record = prepare_image(_noise((300, 100)) + 5.0, 256)
    assert record.resized_hw == (256, 85)
    assert torch.all(x[..., :, 85:] == 0)
    assert x[..., :, :85].max().item() == pytest.approx(1.0, abs=1e-6)


def test_prepare_at_model_size_is_plain_min_max():
    img = _noise((64, 64)) - 30.0
    x, record = prepare_image(img, 64)
    assert record.resized_hw == (64, 64)
    expected = (img - img.min()) / (img.max() - img.min())
    for c in range(3):
        np.testing.assert_allclose(x[0, c].numpy(), expected, rtol=0, atol=1e-6)


def test_prepare_constant_image_gives_zeros_not_nan():
    x, _ = prepare_image(np.full((40, 30), 7.0), 64)
    assert torch.isfinite(x).all() and torch.all(x == 0)


# ---------------------------------------------------------------- channels and dtypes


def test_grey_and_single_channel_and_repeated_rgb_agree():
    grey = _noise((40, 60))
    a, _ = prepare_image(grey, 64)
    b, _ = prepare_image(grey[..., None], 64)
    c, _ = prepare_image(np.repeat(grey[..., None], 3, axis=-1), 64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    torch.testing.assert_close(a[:, 0], a[:, 2], rtol=0, atol=0)


def test_rgba_drops_alpha():
    rgb = _noise((40, 60, 3), seed=1)
    alpha = _noise((40, 60, 1), seed=2, scale=255.0)
    a, _ = prepare_image(np.concatenate([rgb, alpha], axis=-1), 64)
    b, _ = prepare_image(rgb, 64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rgb_channels_stay_apart():
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 255
    x, _ = prepare_image(rgb, 64)
    assert torch.all(x[0, 0] == 1) and torch.all(x[0, 1:] == 0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float64, np.int32])
def test_integer_and_float_dtypes_agree(dtype):
    img = np.random.default_rng(3).integers(0, 200, (30, 50)).astype(dtype)
    a, _ = prepare_image(img, 64)
    b, _ = prepare_image(img.astype(np.float32), 64)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("shape", [(20, 20, 2), (5, 20, 20), (2, 3, 20, 20), (20,)])
def test_bad_image_shapes_are_input_errors(shape):
    with pytest.raises(InputError, match="shape"):
        prepare_image(np.zeros(shape, np.float32), 64)


@pytest.mark.parametrize("bad, modality", [
    (np.nan, None), (np.inf, None), (-np.inf, None), (np.nan, "CT"), (np.nan, "MR"),
    (np.inf, "CT"), (-np.inf, "CT"),
    (np.inf, "MR"), (-np.inf, "MR"),
])
def test_non_finite_image_is_input_error(bad, modality):
    img = _noise((20, 30))
    img[3, 4] = bad
    with pytest.raises(InputError, match="NaN"):
        prepare_image(img, 64, modality)


# ---------------------------------------------------------------- intensity windows


def test_ct_window_clips_to_soft_tissue_window():
    assert MODALITY_WINDOWS["CT"]["window"] == (-160.0, 240.0)
    hu = np.array([[-1000.0, -160.0, 0.0], [40.0, 240.0, 3000.0]])
    out = apply_intensity_window(hu, "CT")
    assert out.dtype == np.float32 and out.shape == hu.shape
    np.testing.assert_array_equal(out, [[-160, -160, 0], [40, 240, 240]])
    np.testing.assert_array_equal(apply_intensity_window(hu, "ct"), out)


def test_mr_clips_at_percentiles():
    lo_p, hi_p = MODALITY_WINDOWS["MR"]["percentiles"]
    rng = np.random.default_rng(4)
    img = rng.normal(500.0, 50.0, (100, 100))
    img[0, :5] = 1e6  # hot outliers
    img[1, :5] = -1e6
    out = apply_intensity_window(img, "MR")
    lo, hi = np.percentile(img, (lo_p, hi_p))
    assert out.min() == pytest.approx(lo, rel=1e-5) and out.max() == pytest.approx(hi, rel=1e-5)
    inside = (img > lo) & (img < hi)
    np.testing.assert_allclose(out[inside], img[inside].astype(np.float32))
    assert out.max() < 1000  # the outliers are gone


@pytest.mark.parametrize("modality", [None, "", "PET", "xray"])
def test_other_modalities_are_unchanged(modality):
    img = np.array([[-5000, 0], [7, 90000]], dtype=np.int32)
    out = apply_intensity_window(img, modality)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, img.astype(np.float32))


def test_prepare_with_ct_window_equals_prepare_of_clipped_image():
    hu = np.random.default_rng(5).uniform(-1000, 2000, (40, 60)).astype(np.float32)
    a, _ = prepare_image(hu, 64, "CT")
    b, _ = prepare_image(np.clip(hu, -160, 240), 64)
    c, _ = prepare_image(hu, 64)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


# ---------------------------------------------------------------- back to the input's size


@pytest.mark.parametrize("hw", [(100, 300), (300, 100), (64, 64), (17, 23)])
def test_logits_to_input_size_returns_original_hw(hw):
    _, record = prepare_image(_noise(hw), 64)
    logits = torch.randn(2, 3, 64, 64)
    out = logits_to_input_size(logits, record)
    assert out.shape == (2, 3, *hw)


def test_logits_to_input_size_ignores_padding():
    """Only the resized region maps back: very negative logits in the padding never leak in."""
    _, record = prepare_image(_noise((100, 300)), 256)
    h, w = record.resized_hw
    logits = torch.full((1, 1, 256, 256), -1e4)
    logits[..., :h, :w] = 1.0
    out = logits_to_input_size(logits, record)
    assert out.shape == (1, 1, 100, 300)
    assert torch.all(out == 1.0)


def test_logits_to_input_size_keeps_orientation():
    """A logit blob in the top-left of the model frame stays top-left in the input frame."""
    _, record = prepare_image(_noise((50, 80)), 64)  # resized (40, 64), scale 0.8
    logits = torch.full((1, 1, 64, 64), -1.0)
    logits[..., 0:8, 0:16] = 1.0  # input rows 0..10, columns 0..20
    mask = (logits_to_input_size(logits, record) > 0)[0, 0].numpy()
    ys, xs = np.nonzero(mask)
    assert ys.min() == 0 and xs.min() == 0
    assert 8 <= ys.max() <= 10 and 18 <= xs.max() <= 20
