"""Masked-image pre-training of the HR encoders on 2D pictures (objective "mae", models mim-hr-*): the
loss reads the hidden blocks only, it learns, runs in the one loop and resumes, and an HR model starts
from its encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.models import build_model
from medseg.models.mim2d import GRID, blocks
from medseg.train import load_config, train


def test_only_the_hidden_blocks_are_scored():
    torch.manual_seed(0)
    model = build_model("mim-hr-test")
    x = torch.rand(2, 3, 256, 256)
    loss, prediction, mask = model(x, generator=torch.Generator().manual_seed(1))
    assert prediction.shape == x.shape and mask.shape == (2, GRID, GRID)
    assert mask.float().mean() == pytest.approx(0.75)
    grad, = torch.autograd.grad(loss, prediction)
    per_block = blocks(grad.abs(), 256 // GRID).sum(-1)  # (B, blocks)
    assert (per_block[~mask.flatten(1)] == 0).all() and (per_block[mask.flatten(1)] > 0).all()


def test_masked_image_modelling_learns_to_fill_in_a_smooth_picture():
    torch.manual_seed(0)
    model = build_model("mim-hr-test").train()
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 256), torch.linspace(0, 1, 256), indexing="ij")
    x = torch.stack([torch.sin(6 * xx + 3 * yy), torch.cos(5 * yy), xx * yy])[None].repeat(2, 1, 1, 1) * 0.5 + 0.5
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        loss = model(x, generator=torch.Generator().manual_seed(step))[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_pretraining_runs_in_the_loop_resumes_exactly_and_an_hr_model_starts_from_it(dataset, tmp_path):
    from trainkit import tiny_overrides

    from medseg.models.build import load_encoder_weights

    extra = dict(model__name="mim-hr-test", model__trainable="all", train__objective="mae", data__val_split="null",
                 data__augment="true",
                 train__epochs=2, train__batch_size=2, train__steps_per_epoch=2)
    config = lambda: load_config(None, tiny_overrides(dataset, **extra))  # noqa: E731
    whole = train(config(), tmp_path / "whole")
    train(config(), tmp_path / "split", stop_after=1)
    second = train(load_config(tmp_path / "split" / "config.yaml"), tmp_path / "split", resume=True)
    assert [s["loss"] for s in second["steps"]] == [s["loss"] for s in whole["steps"]]
    assert all(np.isfinite(s["loss"]) for s in whole["steps"])

    hr = build_model("hr-test")
    load_encoder_weights(hr, tmp_path / "whole" / "latest.safetensors")
    pre = build_model("mim-hr-test", checkpoint=tmp_path / "whole" / "latest.safetensors")
    for name, value in pre.image_encoder.state_dict().items():
        torch.testing.assert_close(hr.image_encoder.state_dict()[name], value)


def test_the_2d_config_loads_and_a_segmenter_is_refused(dataset, tmp_path):
    from trainkit import tiny_overrides

    loaded = load_config(Path(__file__).resolve().parents[2] / "configs" / "mim_2d.yaml")
    assert (loaded.train.objective, loaded.model.name) == ("mae", "mim-hr-small")
    with pytest.raises(InputError, match="masked autoencoder"):
        train(load_config(None, tiny_overrides(dataset, train__objective="mae", data__val_split="null",
                                               model__trainable="all")), tmp_path / "a")


def test_the_registry_lists_a_masked_image_model_per_hr_encoder():
    from medseg.models import list_models

    assert {"mim-hr-small", "mim-hr-tiny", "mim-hr-test"} <= set(list_models("pretraining"))
    model, hr = build_model("mim-hr-test"), build_model("hr-test")
    assert set(model.image_encoder.state_dict()) == set(hr.image_encoder.state_dict())
