"""Fixtures of the inference tests: the tiny random model (64x64 input) behind a CPU Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.infer import Predictor
from medseg.models import build_model


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread while these tests run: the models here are small, and on a shared 2-core
    machine two OpenMP threads wait on each other (the tiny model ran 40x slower with 2 threads under
    load). The previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
