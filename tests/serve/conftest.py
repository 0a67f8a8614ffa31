"""Fixtures of the serve tests: the app over the tiny random model, driven in-process (httpx)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="medseg serve needs the [serve] extra")

from medseg.infer import Predictor  # noqa: E402
from medseg.models import build_model  # noqa: E402
from servekit import make_client  # noqa: E402


@pytest.fixture(scope="module")
def tiny_predictor() -> Predictor:
    torch.manual_seed(0)
    return Predictor(build_model("litemedsam-tiny"), device="cpu")


@pytest.fixture
def client(tiny_predictor, tmp_path):
    served, store = make_client(tiny_predictor, root=tmp_path, max_upload_mb=1)
    yield served
    store.close()


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """(H=60, W=90) uint8: a bright disc on a darker textured background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:60, :90]
    img = rng.normal(60, 10, (60, 90))
    img[(yy - 30) ** 2 + (xx - 40) ** 2 < 15 ** 2] = 200
    return np.clip(img, 0, 255).astype(np.uint8)
