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


def test_a_conv_branch_with_an_implicit_decoder_trains_resumes_exactly_and_reloads(tiny_config, tmp_path):
    from medseg.train import load_config

    extra = dict(model__trainable="conv_branch", model__decoder="implicit", train__epochs=2, data__box_jitter=0.1)
    whole = train(tiny_config(**extra), tmp_path / "whole")
    train(tiny_config(**extra), tmp_path / "split", stop_after=1)
    second = train(load_config(tmp_path / "split" / "config.yaml"), tmp_path / "split", resume=True)
    assert [s["loss"] for s in second["steps"]] == [s["loss"] for s in whole["steps"]]
    model = build_model("litemedsam-tiny", checkpoint=tmp_path / "whole" / "latest.safetensors")
    assert model.peft.kind == "conv_branch" and model.has_implicit_decoder and model.uses_features


def test_bad_decoder_values_are_named(tiny_config, tmp_path):
    with pytest.raises(InputError, match="model.decoder"):
        train(tiny_config(model__decoder="inr"), tmp_path / "run")
    with pytest.raises(InputError, match="promptable"):
        train(tiny_config(model__name="unet-tiny", model__decoder="implicit", train__objective="unet"), tmp_path / "u")


def test_a_conv_branch_trains_beside_cached_embeddings(tiny_config, tmp_path):
    from safetensors.torch import load_file

    config = tiny_config(model__trainable="conv_branch", train__objective="supervised_cached", train__epochs=2,
                         train__cache_dir=str(tmp_path / "cache"))
    result = train(config, tmp_path / "run")
    assert result["history"][-1]["train_loss"] is not None
    state = load_file(tmp_path / "run" / "latest.safetensors")
    fusion = [v for k, v in state.items() if k.startswith("mask_decoder.fusion.") and k.endswith("2.weight")]
    assert fusion and all(v.abs().sum() > 0 for v in fusion)  # zero at the start: the branch's maps trained it
    assert any(k.startswith("peft.branch.") for k in state)


def test_the_cached_objective_refuses_to_pretend_it_augments(tiny_config, tmp_path):
    with pytest.raises(InputError, match="cannot augment"):
        train(tiny_config(train__objective="supervised_cached", data__augment=True), tmp_path / "run")
