"""The load test of ``medseg serve`` in CI: ``benchmarks/serve_load.py --quick`` (a real server with the
shipped model on loopback; 1 client then 4 at once; 5 rounds over twice the cache size). It checks
what must hold on any machine: no request failed, the encoder cache stayed at its size and the
server's memory did not climb round after round. The latencies it prints are figures, not assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_load_test_has_no_errors_and_flat_memory(shared_data, real_weights, tmp_path):
    pytest.importorskip("fastapi", reason="medseg serve needs the [serve] extra")
    out = tmp_path / "serve_load.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--quick", "--data", str(shared_data),
                          "--json", str(out)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["four_clients"]["errors"] == 0 and result["four_clients"]["n"] == 4 * 8
    assert result["cached_slices"] == result["cache_size"] == 4  # 8 images cycled: the cache holds 4
    rounds = result["rss_mb_per_round"]
    assert len(rounds) == 5 and max(rounds[1:]) < rounds[0] + 250, rounds  # bounded, not growing per round
