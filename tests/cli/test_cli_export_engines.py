"""``medseg export`` and ``--engine/--precision/--threads`` on predict: exit 0 with the same mask, exit 2
with one clear line on bad requests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medseg.engines import runtime

TINY = ["--model", "litemedsam-tiny", "--device", "cpu"]
BOX = ["--box", 12, 8, 46, 32]


@pytest.fixture(autouse=True)
def export_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "EXPORT_CACHE", tmp_path / "exports")


def test_export_writes_the_graphs_and_refuses_to_overwrite(cli, tmp_path):
    out = tmp_path / "onnx"
    r = cli("export", "litemedsam-tiny", "--out", out, "--precision", "fp16")
    assert r.rc == 0, r.err
    assert "encoder.onnx" in r.out and json.loads((out / "export.json").read_text())["precision"] == "fp16"
    r = cli("export", "litemedsam-tiny", "--out", out)
    assert r.rc == 2 and "exists" in r.err and "Traceback" not in r.err
    assert cli("export", "litemedsam-tiny", "--out", out, "--overwrite").rc == 0


def test_export_of_a_model_that_takes_no_prompt_is_refused(cli, tmp_path):
    r = cli("export", "unet-tiny", "--out", tmp_path / "x")
    assert r.rc == 2 and "cannot be exported" in r.err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("engine, precision", [("onnxruntime", "fp32"), ("openvino", "bf16"), ("torch", "bf16")])
def test_predict_with_another_engine_gives_the_torch_mask(cli, png, tmp_path, engine, precision):
    from safetensors.torch import save_file

    from medseg.models import build_model

    weights = tmp_path / "tiny.safetensors"  # the same random weights for both runs
    save_file(build_model("litemedsam-tiny").state_dict(), str(weights))
    ref, out = tmp_path / "ref.png", tmp_path / "out.png"
    assert cli("predict", png, *BOX, "--out", ref, *TINY, "--checkpoint", weights).rc == 0
    r = cli("predict", png, *BOX, "--out", out, *TINY, "--checkpoint", weights, "--engine", engine,
            "--precision", precision, "--threads", 1)
    assert r.rc == 0, r.err
    a, b = (np.array(Image.open(p)) > 0 for p in (ref, out))
    assert (a == b).mean() > 0.98


@pytest.mark.parametrize("extra, message", [
    (["--engine", "onnxruntime", "--precision", "bf16"], "runs precision fp32, fp16, int8"),
    (["--engine", "openvino", "--device", "cuda"], "no CUDA GPU"),
    (["--threads", 0], "--threads 0"),
])
def test_bad_engine_requests_exit_2_with_one_line(cli, png, tmp_path, extra, message):
    args = [a for a in TINY if a not in ("--device", "cpu")] if "--device" in extra else TINY
    r = cli("predict", png, *BOX, "--out", tmp_path / "m.png", *args, *extra)
    assert r.rc == 2 and message in r.err and "Traceback" not in r.err
    assert not (tmp_path / "m.png").exists()
