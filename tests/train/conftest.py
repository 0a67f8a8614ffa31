"""Fixtures of the training tests: a tiny synthetic images/ + masks/ + splits.json dataset written
into a temporary folder, and configs of the tiny random model that train in a second or two."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainkit import tiny_overrides, write_dataset

from medseg.train.config import load_config


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("train_data") / "blobs")


@pytest.fixture
def tiny_config(dataset):
    """Factory: ``tiny_config(train__epochs=3)`` -> Config of the tiny model on the synthetic dataset."""
    return lambda **extra: load_config(None, tiny_overrides(dataset, **extra))
