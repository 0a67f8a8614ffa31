"""Helpers of the serve tests (imported by name, like tests/io/dicomkit.py): the app over a predictor,
driven in-process, and PNG uploads."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient

from medseg.serve.app import create_app
from medseg.serve.state import Store


def make_client(predictor, **kwargs) -> tuple[TestClient, Store]:
    store = Store(predictor, cache_size=kwargs.pop("cache_size", 4))
    return TestClient(create_app(store, model_name="litemedsam-tiny", **kwargs)), store


def png_upload(array: np.ndarray, name: str = "picture.png") -> dict:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return {"file": (name, buffer.getvalue(), "image/png")}


def make_volume_client(predictor, volume, **kwargs) -> tuple[TestClient, Store]:
    """As :func:`make_client`, with ``volume`` (a :class:`~medseg.serve.state.VolumeModel`) for 3D clicks."""
    store = Store(predictor, cache_size=kwargs.pop("cache_size", 4), volume=volume)
    return TestClient(create_app(store, model_name="litemedsam-tiny", **kwargs)), store
