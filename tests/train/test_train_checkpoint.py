"""Checkpoints: atomic writes, safe loading, strict model match, and a round trip of every state."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from medseg.errors import CheckpointError
from medseg.models import build_model
from medseg.train import checkpoint as ckpt
from medseg.train.config import OptimConfig
from medseg.train.optim import make_optimizer, make_scheduler, select_trainable

TINY = "litemedsam-tiny"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(TINY)


def _trained_state(model):
    """An optimizer and scheduler that have taken one step on the decoder."""
    select_trainable(model, "decoder")
    optimizer = make_optimizer(model, OptimConfig(lr=1e-3))
    scheduler = make_scheduler(optimizer, OptimConfig(warmup_steps=2), total_steps=10)
    model.mask_decoder.iou_token.weight.grad = torch.ones_like(model.mask_decoder.iou_token.weight)
    optimizer.step()
    scheduler.step()
    return optimizer, scheduler


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    from medseg.io.outputs import write_bytes

    path = tmp_path / "latest.json"
    write_bytes(path, b"old")

    def broken_fsync(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_bytes(path, b"new and longer")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json"]  # no temporary file left


def test_save_then_load_restores_weights_optimizer_scheduler_and_rng(tmp_path, tiny):
    optimizer, scheduler = _trained_state(tiny)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    ckpt.save_checkpoint(tmp_path, "latest", tiny, model_name=TINY, config={"a": {"b": 1}}, epoch=3, step=30,
                         metrics={"val_dice": 0.5}, best_dice=0.5, optimizer=optimizer, scheduler=scheduler)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))

    torch.manual_seed(1)
    other = build_model(TINY)
    opt2, sched2 = _trained_state(other)
    opt2.param_groups[0]["lr"] = 123.0
    meta = ckpt.load_checkpoint(tmp_path, "latest", other, TINY, opt2, sched2)
    assert meta["epoch"] == 3 and meta["step"] == 30 and meta["config"] == {"a": {"b": 1}}
    assert meta["model"] == TINY and meta["medseg_version"]
    for (k, a), b in zip(tiny.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
    assert opt2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert sched2.state_dict() == scheduler.state_dict()
    state_a, state_b = optimizer.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(state_a[i]["exp_avg"], state_b[i]["exp_avg"]) for i in state_a)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_training_state_loads_with_weights_only(tmp_path, tiny):
    optimizer, scheduler = _trained_state(tiny)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    ckpt.save_checkpoint(tmp_path, "best", tiny, model_name=TINY, config={}, epoch=1, step=2, metrics={},
                         best_dice=None, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
    state = torch.load(tmp_path / "best.pt", weights_only=True)
    assert set(state) >= {"optimizer", "scheduler", "scaler", "rng", "epoch", "step"}
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 2


def test_best_safetensors_loads_with_build_model(tmp_path, tiny):
    ckpt.save_checkpoint(tmp_path, "best", tiny, model_name=TINY, config={}, epoch=1, step=1, metrics={},
                         best_dice=0.1)
    loaded = build_model(TINY, checkpoint=tmp_path / "best.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(tiny.state_dict().values(), loaded.state_dict().values()))


def test_checkpoint_of_another_model_is_refused(tmp_path, tiny):
    ckpt.save_checkpoint(tmp_path, "latest", tiny, model_name=TINY, config={}, epoch=1, step=1, metrics={},
                         best_dice=None)
    with pytest.raises(CheckpointError, match="litemedsam"):
        ckpt.load_checkpoint(tmp_path, "latest", tiny, "litemedsam")
    big = build_model("litemedsam")  # random weights: a model of other shapes
    with pytest.raises(CheckpointError, match="does not fit"):
        ckpt.load_weights(big, tmp_path / "latest.safetensors", "litemedsam")


def test_files_of_different_saves_are_reported(tmp_path, tiny):
    save = dict(model_name=TINY, config={}, metrics={}, best_dice=None)
    ckpt.save_checkpoint(tmp_path, "latest", tiny, epoch=1, step=1, **save)
    first = (tmp_path / "latest.json").read_bytes()
    ckpt.save_checkpoint(tmp_path, "latest", tiny, epoch=2, step=2, **save)
    (tmp_path / "latest.json").write_bytes(first)  # as if killed before the JSON of save 2
    with pytest.raises(CheckpointError, match="different saves"):
        ckpt.load_checkpoint(tmp_path, "latest", tiny, TINY)
