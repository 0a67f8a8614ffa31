"""Inference: the Predictor (encode once, prompt many times) and slice-by-slice 3D segmentation."""

from .predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
from .volume import segment_volume

__all__ += ["segment_volume"]
