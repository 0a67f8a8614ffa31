"""``medseg tasks``, ``medseg predict --task`` (a file or a folder, no prompt) and
``medseg evaluate --auto --task`` with a universal checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from medseg.cli import main
from medseg.models import build_model


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("universal-tiny")
    model.automatic.add_task("fundus", "fundus", {1: "disc", 2: "cup"})
    path = tmp_path / "universal.safetensors"
    save_file(model.state_dict(), str(path))
    return path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3)).astype(np.uint8)).save(folder / f"eye{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_tasks_lists_what_the_checkpoint_knows(checkpoint, capsys):
    assert main(["tasks", "--checkpoint", str(checkpoint), "--model", "universal-tiny"]) == 0
    out = capsys.readouterr().out
    assert "fundus" in out and "1 disc, 2 cup" in out


def test_predict_a_folder_writes_one_label_map_per_image_and_never_overwrites(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "labels"
    args = ["predict", str(images), "--task", "fundus", "--checkpoint", str(checkpoint), "--model", "universal-tiny",
            "--out", str(out), "--overlay", str(tmp_path / "pictures")]
    assert main(args) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["eye0.png", "eye1.png", "eye2.png"]
    label = np.array(Image.open(out / "eye0.png"))
    assert label.shape == (40, 48) and set(np.unique(label)) <= {0, 1, 2}
    assert len(list((tmp_path / "pictures").glob("*_overlay.png"))) == 3
    before = (out / "eye1.png").read_bytes()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "eye1.png").read_bytes() == before


def test_predict_a_file_and_the_usage_errors(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "one.png"
    base = ["predict", str(images / "eye0.png"), "--task", "fundus", "--model", "universal-tiny"]
    assert main(base + ["--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert out.is_file()
    assert main(base) == 2
    assert "needs --checkpoint" in capsys.readouterr().err  # universal-tiny ships no tasks
    assert main(base + ["--checkpoint", str(checkpoint), "--box", "1", "1", "9", "9", "--out", str(tmp_path / "b.png")]) == 2
    assert "no prompt" in capsys.readouterr().err
    assert main(["predict", str(images), "--task", "liver", "--checkpoint", str(checkpoint),
                 "--model", "universal-tiny", "--out", str(tmp_path / "x")]) == 2
    assert "unknown task 'liver'" in capsys.readouterr().err


def test_evaluate_auto_scores_every_class(checkpoint, tmp_path, capsys):
    root = tmp_path / "eyes"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48)).astype(np.uint8)).save(root / "images" / f"e{i}.png")
        mask = np.zeros((40, 48), dtype=np.uint8)
        mask[5:30, 5:30], mask[10:20, 10:20] = 1, 2
        Image.fromarray(mask).save(root / "masks" / f"e{i}.png")
    report = tmp_path / "auto.json"
    args = ["evaluate", str(root), "--split", "all", "--auto", "--task", "fundus", "--checkpoint", str(checkpoint),
            "--model", "universal-tiny", "--no-progress", "--json", str(report)]
    assert main(args) == 0
    assert "1 disc" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert len(data["cases"]) == 4 and set(data["per_class"]) == {"1", "2"}
    assert 0.0 <= data["mean_dice"] <= 1.0
    assert main(args) == 2  # the JSON exists: never overwritten
    no_task = [a for a in args[:-2] if a not in ("--task", "fundus")]
    assert main(no_task) == 2  # --auto without --task
    assert "needs both --auto and --task" in capsys.readouterr().err


@pytest.mark.parametrize("engine, precision", [("onnxruntime", "fp32"), ("openvino", "fp32")])
def test_predict_task_on_an_onnx_engine_gives_the_torch_label_map(checkpoint, images, tmp_path, engine, precision,
                                                                  monkeypatch):
    """--task with --engine: the encoder (and prompt decoder) run on the engine, the automatic head in torch."""
    from medseg.engines import runtime

    pytest.importorskip(engine)
    monkeypatch.setattr(runtime, "EXPORT_CACHE", tmp_path / "exports")  # never the user's cache
    base = ["predict", str(images / "eye0.png"), "--task", "fundus", "--model", "universal-tiny",
            "--checkpoint", str(checkpoint)]
    ref, out = tmp_path / "ref.png", tmp_path / "out.png"
    assert main(base + ["--out", str(ref)]) == 0
    assert main(base + ["--out", str(out), "--engine", engine, "--precision", precision, "--threads", "1"]) == 0
    a, b = (np.array(Image.open(p)) for p in (ref, out))
    assert len(np.unique(a)) > 1, "the reference map must hold more than one label for the check to mean anything"
    assert a.shape == b.shape and (a == b).mean() > 0.98
