"""Objective "distill" on tiny models: a random litemedsam-tiny teacher (64x64 -> 256x16x16, from a
checkpoint file) and the hr-test student (256x256 -> 256x16x16). Images from a dataset's train
split and from a plain folder; cached and on-the-fly teacher targets; the student's embedding moves
towards the teacher's; `medseg distill`; bad settings fail before the first step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from medseg.errors import InputError
from medseg.models import build_model
from medseg.train import load_config, train
from medseg.data.datasets import source_cases
from medseg.train.distill import distillation_loss
from medseg.train import embeddings


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "DEFAULT_CACHE_DIR", Path(str(tmp_path / "embedding_cache")))


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "teacher.safetensors"
    save_file(build_model("litemedsam-tiny").state_dict(), str(path))
    return path


@pytest.fixture
def plain_folder(tmp_path):
    """Unlabelled pictures in nested folders (no masks, no splits)."""
    rng = np.random.default_rng(3)
    for i in range(3):
        folder = tmp_path / "unlabeled" / f"part{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30 + i, 40, 3)).astype(np.uint8)).save(folder / f"img{i}.png")
    (tmp_path / "unlabeled" / "notes.txt").write_text("not an image")
    return tmp_path / "unlabeled"


def distill_config(dataset, plain, teacher, **extra):
    values = {"model.name": "hr-test", "model.pretrained": False, "model.trainable": "encoder",
              "train.objective": "distill", "train.epochs": 3, "train.batch_size": 3, "train.device": "cpu",
              "train.amp": "off", "train.progress": False, "train.log_every": 1, "optim.lr": 3e-3,
              "optim.warmup_steps": 1, "data.min_object_pixels": 4, "distill.teacher": "litemedsam-tiny",
              "distill.teacher_checkpoint": str(teacher), "distill.sources": f"[{dataset}, {plain}]",
              "distill.val_sources": f"[{dataset}]", "distill.val_limit": 2}
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return load_config(None, [f"{k}={v}" for k, v in values.items()])


def test_sources_are_a_datasets_train_split_or_every_image_of_a_folder(dataset, plain_folder):
    cases = source_cases(dataset)
    assert len(cases) == 6 and all(c.mask_path is not None for c in cases)  # trainkit: 6 train, 2 val
    plain = source_cases(plain_folder)
    assert [c.stem for c in plain] == ["part0/img0", "part0/img2", "part1/img1"]
    assert all(c.mask_path is None for c in plain)
    assert len(source_cases(plain_folder, limit=2)) == 2
    (plain_folder.parent / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        source_cases(plain_folder.parent / "empty")
    with pytest.raises(InputError, match="not a folder"):
        source_cases(plain_folder.parent / "missing")


def test_distillation_loss_is_mse_plus_cosine():
    a, b = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    loss, parts = distillation_loss(a, b, 0.0)
    assert loss == pytest.approx(float(((a - b) ** 2).mean()))
    loss, parts = distillation_loss(a, a * 3, 0.5)
    assert parts["cosine"] == pytest.approx(0.0, abs=1e-6) and loss == pytest.approx(float(((2 * a) ** 2).mean()))
    with pytest.raises(InputError, match="side / 16"):
        distillation_loss(a, torch.randn(2, 8, 8, 8), 0.0)


@pytest.mark.parametrize("augment", [False, True])
def test_the_student_learns_the_teachers_embedding(dataset, plain_folder, teacher_file, tmp_path, augment):
    config = distill_config(dataset, plain_folder, teacher_file, data__augment=str(augment).lower())
    result = train(config, tmp_path / "run")
    losses = [s["loss"] for s in result["steps"]]
    assert len(losses) == 3 * 3  # 9 images, batch 3, 3 epochs
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) and all(np.isfinite(losses))
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2, 3]
    assert all(0 <= h["val_dice"] <= 1 for h in result["history"])

    torch.manual_seed(0)
    start = build_model("hr-test").state_dict()
    end = build_model("hr-test", checkpoint=tmp_path / "run" / "latest.safetensors").state_dict()
    teacher = build_model("litemedsam-tiny", checkpoint=teacher_file).state_dict()
    assert any(not torch.equal(start[k], end[k]) for k in start if k.startswith("image_encoder."))
    decoder = [k for k in teacher if k.startswith(("prompt_encoder.", "mask_decoder."))]
    assert all(torch.equal(teacher[k], end[k]) for k in decoder)  # the teacher's, copied in and untouched
    assert all(torch.equal(start[k], end[k]) for k in end if ".fusion." in k)


def test_medseg_distill_command_and_its_errors(dataset, plain_folder, teacher_file, tmp_path):
    from medseg.cli import main

    config = distill_config(dataset, plain_folder, teacher_file, train__epochs=1)
    path = tmp_path / "distill.yaml"
    from medseg.train.config import save_config

    save_config(config, path)
    assert main(["distill", str(path), "--run-dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert main(["distill", str(path), "--run-dir", str(tmp_path / "run")]) == 2  # never overwritten silently
    assert main(["distill", str(path), "--run-dir", str(tmp_path / "other"), "--set", "train.objective=supervised"]) == 2
    with pytest.raises(InputError, match="trains the image encoder only"):
        train(distill_config(dataset, plain_folder, teacher_file, model__trainable="decoder"), tmp_path / "x")
    with pytest.raises(InputError, match="distill.sources"):
        train(distill_config(dataset, plain_folder, teacher_file, distill__sources="[]"), tmp_path / "y")
    with pytest.raises(InputError, match="side / 16"):  # a student whose grid is not the teacher's
        train(distill_config(dataset, plain_folder, teacher_file, model__name="litemedsam"), tmp_path / "z")
