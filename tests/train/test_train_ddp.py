"""DDP on the CPU: two torchrun processes with half the batch each train like one process."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

from trainkit import tiny_overrides
from medseg.train import load_config, train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run):
    with open(run / "steps.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def _torchrun(overrides, config_path, run_dir):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(_free_port()), "-m", "medseg.train", str(config_path), "--run-dir", str(run_dir)]
    command += [arg for item in overrides for arg in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=150, env=env)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(dataset, tmp_path):
    # lr 2e-4: Adam turns the float noise of gradients that are zero in theory (attention key biases)
    # into steps of about lr, so weights are compared at atol 1e-5 after a few small steps
    overrides = tiny_overrides(dataset, train__batch_size=4, optim__lr=2e-4)
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump({}))
    done = _torchrun(overrides, config_path, tmp_path / "ddp")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 process(es) on cpu" in done.stdout and done.stdout.count("epoch 2/2") == 1  # rank 0 prints

    train(load_config(None, overrides), tmp_path / "one")
    ddp_losses, one_losses = _losses(tmp_path / "ddp"), _losses(tmp_path / "one")
    assert len(ddp_losses) == len(one_losses) == 4
    np.testing.assert_allclose(ddp_losses, one_losses, rtol=1e-5, atol=1e-6)
    a, b = load_file(tmp_path / "ddp" / "latest.safetensors"), load_file(tmp_path / "one" / "latest.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_parameter_efficient_fine_tuning_with_an_implicit_decoder_trains_under_torchrun(dataset, tmp_path):
    from medseg.models import build_model

    overrides = tiny_overrides(dataset, train__batch_size=4, model__trainable="frequency_adapter",
                               model__decoder="implicit", train__epochs=1)
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump({}))
    done = _torchrun(overrides, config_path, tmp_path / "ddp")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    model = build_model("litemedsam-tiny", checkpoint=tmp_path / "ddp" / "latest.safetensors")
    assert model.peft.kind == "frequency_adapter" and model.has_implicit_decoder
    assert all(np.isfinite(_losses(tmp_path / "ddp")))
