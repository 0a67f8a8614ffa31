"""Shared test fixtures: where ../shared/data lives, and skipping with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSEG_DATA", REPO.parent / "shared" / "data"))



@pytest.fixture(autouse=True, scope="module")
def _torch_threads(request):
    """Intra-op threads while a test module runs: 1 by default (the models in unit tests are tiny, and
    on a shared 2-core machine two OpenMP threads wait on each other: the tiny model ran 40x slower
    with 2 threads under load); a module that runs the real model sets ``TORCH_THREADS = 2``.
    The previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(getattr(request.module, "TORCH_THREADS", 1))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def real_weights() -> None:
    """Skips (with the reason) when the published LiteMedSAM weights are not installed; a test that
    builds a model with ``pretrained=True`` asks for this first."""
    from medseg.errors import CheckpointError
    from medseg.models.weights import litemedsam_weights_path

    try:
        litemedsam_weights_path()
    except CheckpointError as exc:
        pytest.skip(f"LiteMedSAM weights not installed: {exc}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets of ../shared/data (or $MEDSEG_DATA); skips the test when absent."""
    if not (SHARED_DATA / "INDEX.md").is_file():
        if os.environ.get("MEDSEG_REQUIRE_DATA") == "1":
            pytest.fail(f"MEDSEG_REQUIRE_DATA=1 but no real data at {SHARED_DATA}")
        pytest.skip(f"real data not found at {SHARED_DATA} (set MEDSEG_DATA or place shared/ beside the repo)")
    return SHARED_DATA
