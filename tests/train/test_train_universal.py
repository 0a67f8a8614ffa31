"""Objective "universal" on the tiny random model: two synthetic tasks (one binary, one with two nested
classes) trained together from cached embeddings; resume, partial labels, sampling weights, adding a
task without touching the old ones, and the errors raised before training starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from trainkit import write_dataset, write_two_class_dataset

from medseg.data.tasks import load_tasks
from medseg.errors import InputError
from medseg.models import build_model
from medseg.train import load_config, train
from medseg.train import embeddings
from medseg.train.universal import MixedTasks, per_class_dice, query_targets, summarise


@pytest.fixture
def tasks_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(embeddings, "DEFAULT_CACHE_DIR", Path(str(tmp_path / "cache")))
    write_dataset(tmp_path / "blobs")
    write_two_class_dataset(tmp_path / "eyes")
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump({
        "blobs": {"root": "blobs", "modality": "endoscopy"},  # classes from the label values: {255: class_255}
        "eyes": {"root": "eyes", "modality": "fundus", "classes": {1: "disc", 2: "cup"}},
    }))
    return path


def overrides(tasks_file: Path, **extra) -> list[str]:
    values = {"model.name": "universal-tiny", "model.pretrained": False, "model.trainable": "automatic",
              "train.objective": "universal", "universal.tasks": str(tasks_file), "optim.lr": 2e-3,
              "optim.warmup_steps": 1, "train.epochs": 3, "train.batch_size": 4, "train.device": "cpu",
              "train.amp": "off", "train.progress": False, "train.log_every": 1}
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in values.items()]


def losses(run: Path) -> list[float]:
    import csv

    with open(run / "steps.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_task_file_resolves_roots_modalities_and_classes(tasks_file):
    tasks = load_tasks(tasks_file)
    assert list(tasks) == ["blobs", "eyes"]
    assert tasks["blobs"].classes == {255: "class_255"} and tasks["blobs"].modality == "endoscopy"
    assert tasks["eyes"].classes == {1: "disc", 2: "cup"}
    assert tasks["eyes"].root == (tasks_file.parent / "eyes").resolve()
    assert tasks["blobs"].normalisation is None


def test_window_follows_the_modality_unless_the_task_file_says_otherwise(tasks_file):
    entries = {"ct": {"root": "blobs", "modality": "CT"}, "mr": {"root": "blobs", "modality": "mr"},
               "png_ct": {"root": "blobs", "modality": "CT", "window": "none"},
               "forced": {"root": "blobs", "modality": "microscopy", "window": "MR"}}
    path = tasks_file.parent / "windows.yaml"
    path.write_text(yaml.safe_dump(entries))
    tasks = load_tasks(path)
    assert {n: t.normalisation for n, t in tasks.items()} == {"ct": "CT", "mr": "MR", "png_ct": None, "forced": "MR"}


@pytest.mark.parametrize("entry, message", [
    ({"x": {"modality": "CT"}}, "needs a 'root'"),
    ({"x": {"root": "nowhere"}}, "not found"),
    ({"x": {"root": "blobs", "colour": 1}}, "unknown keys"),
    ({"x": {"root": "blobs", "classes": {"a": "b"}}}, "integers"),
    ({"x": {"root": "blobs", "classes": {0: "background"}}}, "no foreground class"),
    ({"x": {"root": "blobs", "window": "PET"}}, "window 'PET'"),
])
def test_task_file_errors_name_the_file_and_task(tasks_file, entry, message):
    bad = tasks_file.parent / "bad.yaml"
    bad.write_text(yaml.safe_dump(entry))
    with pytest.raises(InputError, match=message) as info:
        load_tasks(bad)
    assert "bad.yaml" in str(info.value)


def test_universal_training_lowers_the_loss_on_both_tasks_and_the_checkpoint_knows_them(tasks_file, tmp_path):
    result = train(load_config(None, overrides(tasks_file, train__epochs=6)), tmp_path / "run")
    steps = losses(tmp_path / "run")
    assert np.mean(steps[-3:]) < np.mean(steps[:3])
    assert [h["epoch"] for h in result["history"]] == list(range(7))  # epoch 0 = the untrained head, validated
    assert all(0.0 <= h["val_dice"] <= 1.0 for h in result["history"])
    model = build_model("universal-tiny", checkpoint=tmp_path / "run" / "best.safetensors")
    assert list(model.tasks) == ["blobs", "eyes"]
    assert model.tasks["eyes"].classes == {1: "disc", 2: "cup"} and model.tasks["eyes"].modality == "fundus"


def test_resume_continues_exactly(tasks_file, tmp_path):
    config = load_config(None, overrides(tasks_file))
    train(config, tmp_path / "whole")
    train(config, tmp_path / "parts", stop_after=1)
    train(config, tmp_path / "parts", resume=True)
    assert losses(tmp_path / "parts") == losses(tmp_path / "whole")


def test_loss_covers_only_each_items_own_classes(tasks_file):
    model = build_model("universal-tiny")
    model.automatic.add_task("blobs", "endoscopy", {255: "blob"})
    model.automatic.add_task("eyes", "fundus", {1: "disc", 2: "cup"})
    labels = torch.zeros(2, 64, 64, dtype=torch.uint8)
    labels[0, :10] = 255
    labels[1, 10:20], labels[1, 20:30] = 1, 2
    tasks = ["blobs", "eyes"]
    index = model.automatic.queries(tasks)
    assert index.tolist() == [[0, 0], [1, 0], [1, 1]]  # 1 query for blobs, 2 for eyes: no query for others
    target = query_targets(model, labels, tasks, index)
    assert target.shape == (3, 1, 64, 64)
    assert target[0, 0, :10].all() and target[1, 0, 10:20].all() and target[2, 0, 20:30].all()
    assert target[1, 0, 20:30].sum() == 0  # the cup is not disc: labels are exclusive


def test_per_class_dice_scores_the_argmax_label_map():
    model = build_model("universal-tiny")
    model.automatic.add_task("eyes", "fundus", {1: "disc", 2: "cup"})
    logits = torch.full((2, 1, 8, 8), -5.0)
    logits[0, 0, :4] = 3.0          # disc everywhere in the top half
    logits[1, 0, :2] = 4.0          # cup wins over disc in the top two rows
    labels = torch.zeros(1, 8, 8, dtype=torch.uint8)
    labels[0, 2:4], labels[0, :2] = 1, 2
    scores = per_class_dice(logits, torch.tensor([[0, 0], [0, 1]]), labels, ["eyes"], model)
    assert scores == [("eyes", 1, 1.0), ("eyes", 2, 1.0)]
    assert summarise(scores + [("b", 255, 0.5)])["dice"] == pytest.approx(0.75)  # mean over tasks


def test_mixed_sampling_follows_the_weights_and_is_reproducible(tasks_file, tmp_path):
    from medseg.train.universal import TaskCases

    class Fake(TaskCases):
        def __init__(self, index):
            self.task_index, self.cases = index, [None] * 5

        def __getitem__(self, i):
            return {"task": self.task_index, "index": i}

    mixed = MixedTasks([Fake(0), Fake(1)], [0.0, 1.0], size=50, seed=3)
    assert {mixed[i]["task"] for i in range(50)} == {1}
    mixed = MixedTasks([Fake(0), Fake(1)], [1.0, 3.0], size=400, seed=3)
    share = np.mean([mixed[i]["task"] for i in range(400)])
    assert 0.65 < share < 0.85
    first = [mixed[i]["task"] for i in range(20)]
    assert first == [mixed[i]["task"] for i in range(20)]
    mixed.set_epoch(1)
    assert first != [mixed[i]["task"] for i in range(20)]
    with pytest.raises(InputError, match="universal.weights"):
        MixedTasks([Fake(0)], [-1.0], size=4)


def test_adding_a_task_leaves_the_old_tasks_untouched(tasks_file, tmp_path):
    train(load_config(None, overrides(tasks_file, universal__train_tasks="[blobs]", train__epochs=1)),
          tmp_path / "old")
    old = tmp_path / "old" / "best.safetensors"
    train(load_config(None, overrides(tasks_file, universal__train_tasks="[eyes]", universal__train_shared=False,
                                      model__checkpoint=old, train__epochs=2)), tmp_path / "new")
    before, after = load_file(old), load_file(tmp_path / "new" / "latest.safetensors")
    added = {k for k in after if k not in before}
    assert added == {"automatic.class_tokens.t1", "automatic.modality_tokens.m_fundus"}
    changed = [k for k in before if k != "automatic.task_table" and not torch.equal(before[k], after[k])]
    assert changed == []  # shared head and the old task's tokens: bit-identical
    model = build_model("universal-tiny", checkpoint=tmp_path / "new" / "latest.safetensors")
    assert list(model.tasks) == ["blobs", "eyes"]
    emb = torch.randn(1, 256, 16, 16)
    old_model = build_model("universal-tiny", checkpoint=old)
    assert torch.equal(model.segment(emb, ["blobs"])[0], old_model.segment(emb, ["blobs"])[0])


def test_adding_with_a_trainable_head_changes_shared_weights_but_not_old_tokens(tasks_file, tmp_path):
    train(load_config(None, overrides(tasks_file, universal__train_tasks="[blobs]", train__epochs=1)),
          tmp_path / "old")
    old = tmp_path / "old" / "best.safetensors"
    train(load_config(None, overrides(tasks_file, universal__train_tasks="[eyes]", universal__replay="[blobs]",
                                      model__checkpoint=old, train__epochs=1)), tmp_path / "new")
    before, after = load_file(old), load_file(tmp_path / "new" / "latest.safetensors")
    assert torch.equal(before["automatic.class_tokens.t0"], after["automatic.class_tokens.t0"])
    assert not torch.equal(before["automatic.decoder.mask_tokens.weight"], after["automatic.decoder.mask_tokens.weight"])


@pytest.mark.parametrize("extra, message", [
    ({"model__name": "litemedsam-tiny"}, "needs a universal model"),
    ({"model__trainable": "decoder"}, "set it to 'automatic'"),
    ({"universal__train_tasks": "[nope]"}, "not in"),
    ({"universal__weights": "[1, 2, 3]"}, "3 weights for 2 tasks"),
    ({"universal__tasks": "null"}, "name a task file"),
])
def test_bad_settings_fail_before_training(tasks_file, tmp_path, extra, message):
    with pytest.raises(InputError, match=message):
        train(load_config(None, overrides(tasks_file, **extra)), tmp_path / "run")
    assert not (tmp_path / "run" / "latest.safetensors").exists()


def test_replaying_a_task_the_model_does_not_know_is_refused(tasks_file, tmp_path):
    with pytest.raises(InputError, match="not known to the starting model"):
        train(load_config(None, overrides(tasks_file, universal__train_tasks="[eyes]", universal__replay="[blobs]")),
              tmp_path / "run")


@pytest.mark.slow
def test_two_processes_match_one_process(tasks_file, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = overrides(tasks_file, train__epochs=1, optim__lr=2e-4, data__val_split="null")
    config_path = tmp_path / "empty.yaml"
    config_path.write_text("{}\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "medseg.train", str(config_path), "--run-dir", str(tmp_path / "ddp")]
    command += [arg for item in settings for arg in ("--set", item)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 process(es) on cpu" in done.stdout
    train(load_config(None, settings), tmp_path / "one")
    np.testing.assert_allclose(losses(tmp_path / "ddp"), losses(tmp_path / "one"), rtol=1e-5, atol=1e-6)
    a, b = load_file(tmp_path / "ddp" / "latest.safetensors"), load_file(tmp_path / "one" / "latest.safetensors")
    for key in a:
        np.testing.assert_allclose(a[key].float().numpy(), b[key].float().numpy(), atol=1e-5, err_msg=key)


def test_a_mask_that_does_not_fit_its_image_fails_before_the_run_folder_is_written(tasks_file, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(tmp_path / "eyes" / "masks" / "eye2.png")
    with pytest.raises(InputError, match="eye2.png"):
        train(load_config(None, overrides(tasks_file, train__epochs=1)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_adding_a_task_with_a_low_rank_update_trains_it_and_nothing_old(tasks_file, tmp_path):
    train(load_config(None, overrides(tasks_file, universal__train_tasks="[blobs]", train__epochs=1)),
          tmp_path / "old")
    old = tmp_path / "old" / "best.safetensors"
    train(load_config(None, overrides(tasks_file, universal__train_tasks="[eyes]", universal__train_shared=False,
                                      universal__task_rank=2, model__checkpoint=old, train__epochs=2)),
          tmp_path / "new")
    before, after = load_file(old), load_file(tmp_path / "new" / "latest.safetensors")
    added = {k for k in after if k not in before}
    updates = {k for k in added if k.startswith("automatic.task_updates.sets.t1.")}
    assert updates and added == updates | {"automatic.class_tokens.t1", "automatic.modality_tokens.m_fundus"}
    assert any(after[k].abs().sum() > 0 for k in updates if k.endswith("__b"))  # the update trained
    changed = [k for k in before if k != "automatic.task_table" and not torch.equal(before[k], after[k])]
    assert changed == []
    model = build_model("universal-tiny", checkpoint=tmp_path / "new" / "latest.safetensors")
    assert model.tasks["eyes"].rank == 2
    emb = torch.randn(1, 256, 16, 16)
    assert torch.equal(model.segment(emb, ["blobs"])[0],
                       build_model("universal-tiny", checkpoint=old).segment(emb, ["blobs"])[0])
