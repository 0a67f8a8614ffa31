"""Adapters and LoRA as values of model.trainable in the one loop (the model side: tests/models/test_models_peft.py)."""

from __future__ import annotations

import pytest

from medseg.errors import InputError
from medseg.models import build_model
from medseg.train import train


def test_training_with_lora_runs_in_the_loop_and_the_cached_objective_refuses_it(tiny_config, tmp_path):
    result = train(tiny_config(model__trainable="lora", model__lora_rank=2, train__epochs=1), tmp_path / "run")
    assert result["history"][-1]["train_loss"] is not None
    assert build_model("litemedsam-tiny", checkpoint=tmp_path / "run" / "latest.safetensors").peft.kind == "lora"
    with pytest.raises(InputError, match="frozen image encoder"):
        train(tiny_config(model__trainable="adapters", train__objective="supervised_cached"), tmp_path / "cached")
