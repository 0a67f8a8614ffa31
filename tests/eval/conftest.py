"""Fixtures of the evaluation tests."""

import pytest
from evalkit import BoxFillPredictor


@pytest.fixture
def predictor() -> BoxFillPredictor:
    """A fake predictor that fills each prompted box."""
    return BoxFillPredictor()
