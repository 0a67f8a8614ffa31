"""Shared plumbing of the benchmarks: threads, data location, timing, peak memory, JSON out."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Spin-waiting OpenMP threads wreck timings when anything else runs on the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("MEDSEG_DATA", REPO.parent / "shared" / "data"))
EMBEDDING_CACHE = Path(os.environ.get("MEDSEG_EMBEDDING_CACHE") or Path.home() / ".cache" / "medseg" / "embeddings")
"""The embedding cache of every benchmark (``$MEDSEG_EMBEDDING_CACHE``), passed to training as train.cache_dir."""
THREADS = 2


def set_threads() -> None:
    import torch

    torch.set_num_threads(THREADS)


def median_seconds(fn, runs: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb(code: str) -> float | None:
    """Peak resident memory (MB) of a fresh ``python -c code`` process, from /usr/bin/time -v."""
    timer = Path("/usr/bin/time")
    if not timer.exists():
        return None
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    proc = subprocess.run([str(timer), "-v", sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory probe failed:\n{proc.stderr[-2000:]}")
    return peak_mb_from_time(proc.stderr)


def count_params_flops(encoder, x) -> dict:
    """Parameters and FLOPs of ``encoder(x)``; the CPU flash-attention kernel that real (non-meta) CPU
    inference dispatches to is counted like the other attention kernels."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_flops})
    with counter:
        encoder(x)
    return {"params": sum(p.numel() for p in encoder.parameters()), "flops": counter.get_total_flops()}


def peak_mb_from_time(stderr: str) -> float | None:
    """Peak resident memory (MB) from the report of ``/usr/bin/time -v`` ("Maximum resident set size")."""
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(match.group(1)) / 1024 if match else None


def write_json(payload: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def require_data(data: Path) -> None:
    if not (data / "INDEX.md").is_file():
        sys.exit(f"real data not found at {data}: pass --data DIR or set MEDSEG_DATA")


def timed_train(config, run_dir: Path, budget: float, first_epochs: int = 100) -> dict:
    """``medseg.train.train`` with ``train.time_budget_s = budget`` (the loop times epoch 1, then runs the
    epochs that fit, its LR schedule re-planned; ``first_epochs`` is the horizon it starts from), in a
    fresh run folder. Returns :func:`medseg.train.loop.run_summary` with the wall-clock seconds."""
    import dataclasses

    from medseg.train import train
    from medseg.train.loop import run_summary

    start = time.perf_counter()
    budgeted = dataclasses.replace(config.train, epochs=first_epochs, time_budget_s=budget)
    result = train(dataclasses.replace(config, train=budgeted), run_dir, overwrite=True)
    return run_summary(result, time.perf_counter() - start)


def set_roots(data: Path, names: list[str], work: Path, quick_counts: dict[str, int] | None):
    """``(name, folder)`` of each dataset: ``data / name``, or with ``quick_counts`` a subset of links to that
    many evenly spaced cases per split, written under ``work / "subsets"`` (a smoke test's data)."""
    from medseg.data.datasets import write_subset

    for name in names:
        root = data / name
        yield name, (root if quick_counts is None else write_subset(root, work / "subsets" / name, quick_counts))
