"""Fine-tuning a high-resolution student through the ordinary loop: the mask decoder and its
stride-4/8 fusion head train, the encoder stays as distilled, click rounds work at the student's size."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from medseg.models import build_model
from medseg.train import train


def test_the_fusion_head_learns_in_supervised_fine_tuning(tiny_config, tmp_path):
    config = tiny_config(model__name="hr-test", train__epochs=2, train__click_rounds=1, data__val_split="null")
    train(config, tmp_path / "run")
    torch.manual_seed(config.train.seed)
    start, end = build_model("hr-test").state_dict(), load_file(tmp_path / "run" / "latest.safetensors")
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert any(".fusion." in k for k in changed) and any(k.startswith("mask_decoder.transformer") for k in changed)
    assert not any(k.startswith("image_encoder.") for k in changed)


def test_cached_fine_tuning_refuses_a_model_with_a_fusion_head(tiny_config, tmp_path, monkeypatch):
    import pytest

    from medseg.errors import InputError
    from medseg.train import embeddings

    monkeypatch.setattr(embeddings, "DEFAULT_CACHE_DIR", Path(str(tmp_path / "cache")))
    with pytest.raises(InputError, match="high-resolution mask head"):
        train(tiny_config(model__name="hr-test", train__objective="supervised_cached"), tmp_path / "run")
