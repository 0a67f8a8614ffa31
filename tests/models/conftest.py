"""Fixtures of the model tests: models are built with fixed seeds so random weights are reproducible."""

from __future__ import annotations

import pytest
import torch

from medseg.models import build_model

TINY = "litemedsam-tiny"


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
