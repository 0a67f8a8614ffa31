"""The training loop on the tiny random model: run folder contents, exact resume, accumulation,
what trains, and bad input that fails before the first step."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from medseg.errors import CheckpointError, InputError
from medseg.models import build_model
from medseg.train import config_to_dict, load_config, train
from medseg.train.checkpoint import read_meta
from medseg.train.objectives import SupervisedObjective

TINY = "litemedsam-tiny"


def _losses(result):
    return [s["loss"] for s in result["steps"]]


def _weights_equal(a, b):
    wa, wb = load_file(a), load_file(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_run_writes_checkpoints_logs_config_and_curves(tiny_config, tmp_path):
    config = tiny_config()
    run = tmp_path / "run"
    result = train(config, run)
    history = result["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]  # epoch 0: the starting weights, validated
    assert set(history[0]) == {"epoch", "step", "train_loss", "val_dice", "lr", "seconds"}
    assert history[0]["step"] == 0 and history[0]["train_loss"] is None
    assert all(0 <= h["val_dice"] <= 1 for h in history) and result["best_dice"] == max(h["val_dice"] for h in history)
    assert len(result["steps"]) == history[-1]["step"] == 2 * history[1]["step"]
    names = {p.name for p in run.iterdir()}
    assert names >= {"config.yaml", "metrics.csv", "steps.csv", "curves.png", "latest.safetensors", "latest.json",
                     "latest.pt", "best.safetensors", "best.json", "best.pt"}
    assert not [n for n in names if n.endswith(".tmp")]
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["train_loss"] or "nan") for r in rows][1:] == [h["train_loss"] for h in history][1:]
    assert rows[0]["epoch"] == "0" and rows[0]["train_loss"] == ""
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = load_config(run / "config.yaml")
    assert resolved.data.image_size == 64 and resolved.model == config.model  # resolved from the model
    meta = read_meta(run, "latest")
    assert meta["config"] == config_to_dict(resolved) and meta["epoch"] == 2 and meta["model"] == TINY
    model = build_model(TINY, checkpoint=run / "best.safetensors")  # what predict/evaluate --checkpoint do
    assert model.image_size == 64


def test_a_used_run_folder_needs_resume_or_overwrite(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(train__epochs=1, data__val_split="null"), run)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        train(tiny_config(train__epochs=1), run)
    with pytest.raises(InputError, match="either resume or overwrite"):
        train(tiny_config(), run, resume=True, overwrite=True)
    result = train(tiny_config(train__epochs=1), run, overwrite=True)
    assert len(result["history"]) == 2 and (run / "best.json").is_file()
    assert (run / "notes.txt").read_text() == "mine"  # only what a run writes is replaced
    with pytest.raises(InputError, match="nothing to resume"):
        train(tiny_config(), tmp_path / "empty", resume=True)


@pytest.mark.slow
def test_resume_repeats_an_uninterrupted_run_exactly(tiny_config, tmp_path):
    # jitter, accumulation and a warm-up all depend on the restored state
    extra = dict(train__epochs=4, data__box_jitter=0.2, optim__accumulate=2, optim__warmup_steps=3)
    whole = train(tiny_config(**extra), tmp_path / "whole")
    first = train(tiny_config(**extra), tmp_path / "split", stop_after=2)
    assert [h["epoch"] for h in first["history"]] == [0, 1, 2]
    second = train(load_config(tmp_path / "split" / "config.yaml"), tmp_path / "split", resume=True)
    assert _losses(second) == _losses(whole)  # exactly, step by step
    assert [s["lr"] for s in second["steps"]] == [s["lr"] for s in whole["steps"]]
    assert [h["val_dice"] for h in second["history"]] == [h["val_dice"] for h in whole["history"]]
    assert second["best_dice"] == whole["best_dice"]
    assert _weights_equal(tmp_path / "whole" / "latest.safetensors", tmp_path / "split" / "latest.safetensors")
    assert _weights_equal(tmp_path / "whole" / "best.safetensors", tmp_path / "split" / "best.safetensors")


def test_best_never_falls_below_the_starting_weights(tiny_config, tmp_path, monkeypatch):
    # validation scripted to get worse after the start: best.* must stay the starting weights
    scores = iter([0.8, 0.5, 0.6])
    monkeypatch.setattr(SupervisedObjective, "validate", lambda self, model, loader: {"dice": next(scores)})
    result = train(tiny_config(train__epochs=2), tmp_path / "run")
    assert [(h["epoch"], h["val_dice"]) for h in result["history"]] == [(0, 0.8), (1, 0.5), (2, 0.6)]
    assert result["best_dice"] == 0.8 and read_meta(tmp_path / "run", "best")["epoch"] == 0
    torch.manual_seed(0)
    start = build_model(TINY).state_dict()
    best, latest = (load_file(tmp_path / "run" / f"{n}.safetensors") for n in ("best", "latest"))
    assert all(torch.equal(start[k], best[k]) for k in start)
    assert not all(torch.equal(start[k], latest[k]) for k in start)
    monkeypatch.undo()
    skipped = train(tiny_config(train__epochs=1, train__validate_start="false"), tmp_path / "plain")
    assert [h["epoch"] for h in skipped["history"]] == [1]


def test_steps_per_epoch_and_val_limit_keep_big_splits_short(tiny_config, tmp_path):
    result = train(tiny_config(train__epochs=2, train__steps_per_epoch=1, data__val_limit=1), tmp_path / "run")
    assert [h["step"] for h in result["history"]] == [0, 1, 2]
    with pytest.raises(InputError, match="steps_per_epoch"):
        tiny_config(train__steps_per_epoch=0)


def test_accumulation_equals_the_larger_batch(tiny_config, tmp_path):
    big = train(tiny_config(train__epochs=1, train__batch_size=4, data__val_split="null"), tmp_path / "a")
    acc = train(tiny_config(train__epochs=1, train__batch_size=2, optim__accumulate=2, data__val_split="null"),
                tmp_path / "b")
    assert len(big["steps"]) == len(acc["steps"]) == 2
    np.testing.assert_allclose(_losses(acc), _losses(big), rtol=1e-5)
    assert big["best_dice"] is None and not (tmp_path / "a" / "best.json").exists()  # no val split, no best


def test_everything_trains_with_activation_checkpointing_and_focal_loss(tiny_config, tmp_path):
    config = tiny_config(train__epochs=1, model__trainable="all", model__activation_checkpointing="true",
                         train__pixel_loss="focal", data__val_split="null")
    train(config, tmp_path / "run")
    torch.manual_seed(config.train.seed)
    start, end = build_model(TINY).state_dict(), load_file(tmp_path / "run" / "latest.safetensors")
    changed = {k.split(".")[0] for k in start if not torch.equal(start[k], end[k])}
    assert {"image_encoder", "mask_decoder"} <= changed


def test_decoder_training_leaves_the_rest_untouched(tiny_config, tmp_path):
    config = tiny_config(train__epochs=1, data__val_split="null")
    train(config, tmp_path / "run")
    torch.manual_seed(config.train.seed)
    start, end = build_model(TINY).state_dict(), load_file(tmp_path / "run" / "latest.safetensors")
    changed = {k.split(".")[0] for k in start if not torch.equal(start[k], end[k])}
    assert changed == {"mask_decoder"}  # BatchNorm statistics of the frozen encoder included


@pytest.mark.parametrize("extra, error, words", [
    ({"model__name": "nosuch"}, InputError, ["model.name", "litemedsam-tiny"]),
    ({"train__objective": "nosuch"}, InputError, ["train.objective", "supervised"]),
    ({"data__val_split": "nosuch"}, InputError, ["nosuch", "train", "val"]),
    ({"train__batch_size": 64}, InputError, ["fewer than one optimizer step"]),
    ({"data__image_size": 256}, InputError, ["data.image_size", "64"]),
    ({"model__pretrained": "true"}, CheckpointError, ["no published weights"]),
])
def test_bad_input_fails_before_training(tiny_config, tmp_path, extra, error, words):
    run = tmp_path / "run"
    with pytest.raises(error) as info:
        train(tiny_config(**extra), run)
    assert all(w in str(info.value) for w in words), str(info.value)
    assert not run.exists()


def test_wrong_dataset_layout_and_foreign_checkpoint_are_named(tiny_config, tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(InputError, match=str(tmp_path / "flat")):
        train(tiny_config(data__root=str(tmp_path / "flat")), tmp_path / "run")
    foreign = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(CheckpointError, match="other.safetensors"):
        train(tiny_config(model__checkpoint=str(foreign)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_augmented_runs_train_and_resume_exactly(tiny_config, tmp_path):
    full = train(tiny_config(train__epochs=3, data__augment="true"), tmp_path / "full")
    train(tiny_config(train__epochs=3, data__augment="true"), tmp_path / "cut", stop_after=1)
    resumed = train(tiny_config(train__epochs=3, data__augment="true"), tmp_path / "cut", resume=True)
    assert np.isfinite(_losses(full)).all()
    np.testing.assert_array_equal(_losses(resumed), _losses(full))
