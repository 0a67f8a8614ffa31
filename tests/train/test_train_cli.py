"""``medseg train``: the parser the lead wires into medseg.cli, --resume, --set, and error exits."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from trainkit import tiny_overrides
from medseg.errors import InputError
from medseg.train.cli import add_train_parser, main, resolve
from medseg.train.config import load_config, save_config


def _parse(argv):
    parser = argparse.ArgumentParser(prog="medseg")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_parser_reads_every_option():
    args = _parse(["train", "c.yaml", "--set", "optim.lr=1e-3", "--set", "train.epochs=3",
                   "--run-dir", "runs/x", "--overwrite"])
    assert args.command == "train" and args.config == Path("c.yaml")
    assert args.overrides == ["optim.lr=1e-3", "train.epochs=3"]
    assert args.run_dir == Path("runs/x") and args.overwrite and args.resume is None
    assert callable(args.func)


def test_resume_reloads_the_run_config_then_applies_set(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(None, ["train.epochs=2", "optim.lr=0.5", "data.root=somewhere"]), run / "config.yaml")
    config, run_dir, resume = resolve(_parse(["train", "--resume", str(run), "--set", "train.epochs=6"]))
    assert resume and run_dir == run
    assert config.train.epochs == 6 and config.optim.lr == 0.5 and config.data.root == "somewhere"


def test_default_run_dir_is_named_after_the_config(tmp_path):
    path = tmp_path / "my_run.yaml"
    path.write_text("train:\n  epochs: 1\n")
    assert resolve(_parse(["train", str(path)]))[1] == Path("runs") / "my_run"
    path.write_text("train:\n  run_dir: elsewhere\n")
    assert resolve(_parse(["train", str(path)]))[1] == Path("elsewhere")


@pytest.mark.parametrize("argv, words", [(["train"], "CONFIG.yaml"),
                                         (["train", "--resume", "nowhere"], "config.yaml not found"),
                                         (["train", "--resume", "a", "--overwrite"], "not both")])
def test_argument_errors(argv, words):
    with pytest.raises(InputError, match=words):
        resolve(_parse(argv))


def test_train_then_resume_from_the_command_line(dataset, tmp_path, capsys):
    config_path = tmp_path / "tiny.yaml"
    sections: dict = {}
    for item in tiny_overrides(dataset, train__epochs=1, data__val_split="null"):
        key, value = item.split("=", 1)
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = yaml.safe_load(value)
    config_path.write_text(yaml.safe_dump(sections))
    run = tmp_path / "run"
    assert main([str(config_path), "--run-dir", str(run)]) == 0
    assert "done: 1 epoch," in capsys.readouterr().out
    assert main([str(config_path), "--run-dir", str(run)]) == 2  # the folder is in use
    assert "not empty" in capsys.readouterr().err
    assert main(["--resume", str(run), "--set", "train.epochs=2"]) == 0
    assert "done: 2 epochs" in capsys.readouterr().out
    assert load_config(run / "config.yaml").train.epochs == 2
    assert main([str(config_path), "--set", "optim.nope=1", "--run-dir", str(tmp_path / "x")]) == 2
    assert "'optim.nope'" in capsys.readouterr().err


def test_done_counts_trained_epochs_not_the_starting_weights_row(dataset, tmp_path, capsys):
    """With validation, history holds an epoch-0 row (the starting weights); 2 epochs are 2, not 3."""
    overrides = tiny_overrides(dataset, train__epochs=2)
    args = [f"--set={item}" for item in overrides]
    assert main(args + ["--run-dir", str(tmp_path / "run")]) == 2  # no config file: a clear error
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text("{}\n")
    assert main([str(config_path), *args, "--run-dir", str(tmp_path / "run")]) == 0
    assert "done: 2 epochs, best val Dice" in capsys.readouterr().out


def test_the_embedding_cache_folder_comes_from_the_environment_at_the_command_line(tmp_path, monkeypatch):
    """$MEDSEG_EMBEDDING_CACHE is read by `medseg train` into train.cache_dir; a value in the config wins."""
    from argparse import Namespace

    from medseg.train.cli import resolve

    config_path = tmp_path / "c.yaml"
    config_path.write_text("{}\n")
    monkeypatch.setenv("MEDSEG_EMBEDDING_CACHE", str(tmp_path / "env_cache"))

    def resolved(*overrides: str):
        args = Namespace(config=config_path, resume=None, run_dir=None, overwrite=False, overrides=list(overrides))
        return resolve(args)[0].train.cache_dir

    assert resolved() == str(tmp_path / "env_cache")
    assert resolved(f"train.cache_dir={tmp_path / 'mine'}") == str(tmp_path / "mine")
    monkeypatch.delenv("MEDSEG_EMBEDDING_CACHE")
    assert resolved() is None
