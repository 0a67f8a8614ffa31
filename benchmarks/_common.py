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
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return int(match.group(1)) / 1024 if match else None


def write_json(payload: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def require_data(data: Path) -> None:
    if not (data / "INDEX.md").is_file():
        sys.exit(f"real data not found at {data}: pass --data DIR or set MEDSEG_DATA")


def timed_train(config, run_dir: Path, budget: float, first_epochs: int = 100) -> dict:
    """``medseg.train.train`` for about ``budget`` seconds of wall-clock time: one timed epoch, then a
    resumed run with the epochs that fit (each estimated at 1.05x the first, setup time included).

    Returns {"epochs", "steps", "seconds", "best_val_dice", "best_epoch", "first_loss", "last_loss",
    "checkpoint"} (the run's ``best.safetensors``)."""
    import dataclasses

    from medseg.train import train

    start = time.perf_counter()
    first = train(dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=first_epochs)), run_dir,
                  overwrite=True, stop_after=1)
    spent = time.perf_counter() - start
    epoch = next(h["seconds"] for h in first["history"] if h["epoch"] == 1)
    more = int((budget - spent) // (epoch * 1.05 + 0.5))
    result = first
    if more >= 1:
        result = train(dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1 + more)),
                       run_dir, resume=True)
    best = max(result["history"], key=lambda h: -1 if h["val_dice"] is None else h["val_dice"])
    return {"epochs": sum(1 for h in result["history"] if h["epoch"] > 0), "steps": len(result["steps"]),
            "seconds": round(time.perf_counter() - start, 1), "best_val_dice": result["best_dice"],
            "best_epoch": best["epoch"], "first_loss": result["steps"][0]["loss"] if result["steps"] else None,
            "last_loss": result["steps"][-1]["loss"] if result["steps"] else None,
            "checkpoint": run_dir / "best.safetensors"}
