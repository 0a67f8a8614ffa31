"""Fixtures of the inference tests: the tiny random model (64x64 input) behind a CPU Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.infer import Predictor
from medseg.models import build_model


@pytest.fixture(scope="module")
def tiny_model():
    """litemedsam-tiny with seeded random weights; its masks cover a good part of each box, so
    comparisons between masks are not trivially all-False."""
    torch.manual_seed(0)
    return build_model("litemedsam-tiny")


@pytest.fixture
def predictor(tiny_model) -> Predictor:
    return Predictor(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def image_50x80() -> np.ndarray:
    """A non-square (H=50, W=80) float image: a bright rectangle on noise."""
    rng = np.random.default_rng(0)
    img = rng.normal(20.0, 5.0, (50, 80)).astype(np.float32)
    img[10:35, 20:55] += 100.0
    return img
