"""Fixtures of the training tests: a tiny synthetic images/ + masks/ + splits.json dataset written
into a temporary folder, and configs of the tiny random model that train in a second or two."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainkit import tiny_overrides, write_dataset

from medseg.train.config import load_config


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: launches processes or trains several epochs (still in the default run)")


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a busy 2-core machine two OpenMP threads slow the tiny model down a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("train_data") / "blobs")


@pytest.fixture
def tiny_config(dataset):
    """Factory: ``tiny_config(train__epochs=3)`` -> Config of the tiny model on the synthetic dataset."""
    return lambda **extra: load_config(None, tiny_overrides(dataset, **extra))
