"""A volume of a modality the 3D head never trained on gets a warning that says what to use instead."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medseg.infer.volume_prompts import VolumePredictor
from medseg.models import build_model


def test_a_volume_of_an_unseen_modality_is_warned_about():
    model = build_model("litemedsam-3d-tiny")
    volume = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    VolumePredictor(model).set_volume(volume, (3.0, 1.0, 1.0), "CT")  # nothing known of its training: silent
    model.trained_modalities = ("MR",)
    predictor = VolumePredictor(model)
    with pytest.warns(UserWarning, match="trained on MR volumes only and this volume is CT.*--model litemedsam"):
        predictor.set_volume(volume, (3.0, 1.0, 1.0), "CT")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictor.set_volume(volume, (3.0, 1.0, 1.0), "mr")
        predictor.set_volume(volume, (3.0, 1.0, 1.0), None)  # a file that names no modality
