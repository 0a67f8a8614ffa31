"""Models: encoders, SAM prompt encoder and mask decoder, and the registry in ``build.py``."""

from .build import build_model, list_models
from .sam import PromptableSegmenter

__all__ = ["build_model", "list_models", "PromptableSegmenter"]
