"""Shared test fixtures: where ../shared/data lives, and skipping with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSEG_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets of ../shared/data (or $MEDSEG_DATA); skips the test when absent."""
    if not (SHARED_DATA / "INDEX.md").is_file():
        if os.environ.get("MEDSEG_REQUIRE_DATA") == "1":
            pytest.fail(f"MEDSEG_REQUIRE_DATA=1 but no real data at {SHARED_DATA}")
        pytest.skip(f"real data not found at {SHARED_DATA} (set MEDSEG_DATA or place shared/ beside the repo)")
    return SHARED_DATA
