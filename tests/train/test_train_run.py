"""The loop's contract with objectives and outputs: one model built per run, the run's context handed
down (cache folder from the config, never from the environment), pairs checked before the run folder
is written, a wall-clock budget, files with the umask's permissions, YAML booleans as choices."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from trainkit import write_dataset

from medseg.errors import InputError
from medseg.train import load_config, train
from medseg.train import loop as loop_module


def test_the_model_is_built_once_per_run_even_with_cached_embeddings(tiny_config, tmp_path, monkeypatch):
    built = []
    real = loop_module.build_model
    monkeypatch.setattr(loop_module, "build_model", lambda *a, **k: built.append(a) or real(*a, **k))
    config = tiny_config(train__objective="supervised_cached", train__epochs=1,
                         train__cache_dir=str(tmp_path / "cache"))
    result = train(config, tmp_path / "run")
    assert len(built) == 1 and result["steps"]
    assert any((tmp_path / "cache").glob("*/manifest.json"))  # the cache went where the config said


def test_the_environment_is_not_read_below_the_command_line(tiny_config, tmp_path, monkeypatch):
    from medseg.train import embeddings

    monkeypatch.setenv("MEDSEG_EMBEDDING_CACHE", str(tmp_path / "from_env"))
    monkeypatch.setattr(embeddings, "DEFAULT_CACHE_DIR", tmp_path / "default")
    train(tiny_config(train__objective="supervised_cached", train__epochs=1), tmp_path / "run")
    assert not (tmp_path / "from_env").exists() and any((tmp_path / "default").glob("*/manifest.json"))


def test_a_mismatched_pair_fails_before_the_run_folder_is_written(tmp_path):
    root = write_dataset(tmp_path / "ds")
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(root / "masks" / "case3.png")  # 20x20, image 48x40
    from trainkit import tiny_overrides

    for objective in ("supervised", "unet"):
        extra = {"train__objective": objective}
        if objective == "unet":
            extra.update(model__name="unet-tiny", model__trainable="all")
        with pytest.raises(InputError, match="case3"):
            train(load_config(None, tiny_overrides(root, **extra)), tmp_path / f"run_{objective}")
        assert not (tmp_path / f"run_{objective}").exists()


def test_a_time_budget_runs_the_epochs_that_fit_and_replans_the_schedule(tiny_config, tmp_path):
    result = train(tiny_config(train__epochs=50, train__time_budget_s=0.001), tmp_path / "run")
    trained = [h for h in result["history"] if h["epoch"] > 0]
    assert len(trained) == 1 and trained[0]["val_dice"] is not None  # the only epoch is validated
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["train"]["time_budget_s"] == 0.001
    lrs = [s["lr"] for s in result["steps"]]
    assert lrs[-1] < lrs[1]  # decayed over the one planned epoch, not over fifty
    roomy = train(tiny_config(train__epochs=3, train__time_budget_s=3600), tmp_path / "roomy")
    assert sum(h["epoch"] > 0 for h in roomy["history"]) == 3  # never more than train.epochs


def test_run_files_get_the_umasks_permissions(tiny_config, tmp_path):
    old = os.umask(0o022)
    try:
        train(tiny_config(train__epochs=1), tmp_path / "run")
    finally:
        os.umask(old)
    for name in ("latest.safetensors", "latest.json", "latest.pt", "config.yaml", "metrics.csv"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize(("text", "expected"), [("off", "off"), ("no", "off"), ("false", "off")])
def test_yaml_booleans_become_the_one_choice_they_spell(tmp_path, text, expected):
    path = Path(tmp_path / "c.yaml")
    path.write_text(f"train:\n  amp: {text}\n")
    assert load_config(path).train.amp == expected
    path.write_text("train:\n  pixel_loss: off\n")  # no choice of pixel_loss is a boolean word
    with pytest.raises(InputError, match="quote the word"):
        load_config(path)
