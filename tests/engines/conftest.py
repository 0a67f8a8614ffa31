"""Fixtures of the engine tests: the tiny random models and an export cache inside ``tmp_path``."""

from __future__ import annotations

import pytest
import torch

from medseg.engines import runtime
from medseg.models import build_model


@pytest.fixture(autouse=True)
def export_cache(tmp_path, monkeypatch):
    """Exports made for an engine go to ``tmp_path/exports``, never to the user's cache."""
    monkeypatch.setattr(runtime, "EXPORT_CACHE", tmp_path / "exports")
    return tmp_path / "exports"


@pytest.fixture(scope="module", params=["litemedsam-tiny", "hr-test"])
def tiny(request):
    """A tiny random promptable model: LiteMedSAM's layout (64 px) and the HR layout with its fusion head."""
    torch.manual_seed(0)
    return request.param, build_model(request.param).eval()
