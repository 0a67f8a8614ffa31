"""Fixtures of the model tests: models are built with fixed seeds so random weights are reproducible."""

from __future__ import annotations

import pytest
import torch

from medseg.models import build_model

TINY = "litemedsam-tiny"


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
    """The tiny 64x64 variant with seeded random weights, in eval mode. Tests must not train it."""
    torch.manual_seed(0)
    return build_model(TINY)


@pytest.fixture(scope="module")
def tiny_images() -> torch.Tensor:
    """Two random (3, 64, 64) images in [0, 1]."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 64, 64, generator=g)


@pytest.fixture
def tiny_boxes() -> torch.Tensor:
    """One box per image of ``tiny_images``, x0, y0, x1, y1 in model-input pixels."""
    return torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 30.0]])
