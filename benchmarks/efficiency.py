"""Efficiency benchmark of image encoders: parameters, GFLOPs, CPU latency and peak memory vs resolution.

Encoders (each maps (B, 3, S, S) to an embedding; one row per model, resolution and batch):

* ``litemedsam-tinyvit``  LiteMedSAM's TinyViT encoder at its native 256 only, -> (B, 256, S/4, S/4):
                          the reference of the latency ratios;
* ``tinyvit``             the same architecture at 512, 1024, 2048 (no position embedding, its windows
                          pad; still S/4 output, so 4x the tokens of the S/16 encoders at the same S);
* ``sam-vit-b``           ``medseg.models.vit_sam.build_sam_vit_b_encoder``: SAM ViT-B shape, random
                          weights, -> (B, 256, S/16, S/16);
* ``hr-tiny``, ``hr-small`` ``build_model(name).image_encoder`` -> (B, 256, S/16, S/16), where registered
                          (skipped with a printed note if not).

Weights are random (cost does not depend on them).

Per configuration: parameters (M); GFLOPs of one batch-1 forward counted by
``torch.utils.flop_counter.FlopCounterMode`` on the meta device (2 FLOPs per multiply-add; convolutions,
matmuls and attention only, elementwise ops not counted); inference latency (``torch.inference_mode``,
batch 1, 1 warm-up then the median of 3 runs, 1 if a run takes > 20 s); one training step (forward, MSE
against a zero target of the output's shape, backward, AdamW step; 1 warm-up then the median of 2, 1
if slow) at batch 1 and 4; and the peak memory of each.

Method: every measurement runs in a fresh ``python benchmarks/efficiency.py --worker SPEC`` process under
``/usr/bin/time -v`` ("Maximum resident set size" is the peak: the whole process RSS, Python + torch +
model + activations; ``baseline_rss_mb`` in the JSON is a worker that only imports torch, subtract it
for the model's own share), with ``OMP_NUM_THREADS=2``, ``OMP_WAIT_POLICY=PASSIVE``,
``torch.set_num_threads(2)``, an address-space limit (``--mem-limit-gb``, default 20) and a timeout, so
a configuration that does not fit gives null. Before a run the peak is estimated from a meta-device
pass (live tensor bytes, no compute), rescaled by how far the estimate was off at the previous
resolution; configurations estimated above 90% of the limit (18 GB) are not tried (null, reason in
the row's ``notes``), nor those that failed at a smaller side.

    python benchmarks/efficiency.py [--quick] [--json OUT] [--models sam-vit-b tinyvit@1024 ...]
                                    [--resolutions 512 1024] [--mem-limit-gb 20]

Output: a table, latency ratios vs ``litemedsam-tinyvit@256``, JSON (default
``benchmarks/results/efficiency[_quick].json``: ``{"rows": [{"model", "resolution", "batch", "params_m",
"gflops", "infer_s", "infer_peak_mb", "train_step_s", "train_peak_mb", "notes"}], "baseline_rss_mb", ...}``)
and a PNG beside it (same stem): peak memory and time vs resolution, log-log, one line per model.

``--quick``: resolutions 512 and 1024, training at batch 1 only, 1 timed run (a first call slower than
20 s is itself the timed run), training predicted to take > 60 s not run (noted in the row: TinyViT at
512 and 1024, ViT-B at 1024 on a 2-core CPU). It took 7.5 min on the 2-core machine while another
benchmark shared it, before that single-call rule (which saves ~2 min of TinyViT warm-ups); expect
4-6 min on a quiet one. The full run is estimated at 40-60 min from the quick run's times (TinyViT
and ViT-B inference at 2048, ~6 and ~3 min per call, dominate), with batch-4 training and the 2048
sweep; ``--models`` / ``--resolutions`` measure a subset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, THREADS, count_params_flops, peak_mb_from_time, set_threads, write_json  # noqa: E402

RESOLUTIONS = (512, 1024, 2048)
QUICK_RESOLUTIONS = (512, 1024)
REFERENCE = "litemedsam-tinyvit"       # latency ratios are against this model at its native side
TRAIN_BATCHES = (1, 4)
INFER_RUNS, QUICK_INFER_RUNS = 3, 1
TRAIN_RUNS, QUICK_TRAIN_RUNS = 2, 1
SLOW_RUN_S = 20.0                      # a warm-up slower than this: one timed run
QUICK_MAX_TRAIN_S = 60.0               # --quick skips training steps predicted slower than this
MEM_LIMIT_GB = 20.0                    # address-space limit per worker (--mem-limit-gb)
SKIP_FRACTION = 0.9                    # configurations estimated above this fraction of it are not tried
TIMEOUT_S, QUICK_TIMEOUT_S = 1800, 300 # per worker process
ESTIMATE_MARGIN = 1.2                  # live tensor bytes -> RSS: allocator slack, workspaces
RESULT_TAG = "EFFICIENCY_RESULT "


@dataclass(frozen=True)
class Encoder:
    """An encoder to measure: its row name, what builds it, which registry model it needs, its sides."""

    name: str
    builder: str                      # "registry:<model>" (its .image_encoder) or "sam-vit-b"
    requires: str | None              # a name of medseg.models.list_models() it needs, if any
    resolutions: tuple[int, ...] | None  # fixed sides (native only), or None: the resolution sweep


ENCODERS = (
    Encoder(REFERENCE, "registry:litemedsam", "litemedsam", (256,)),
    Encoder("tinyvit", "registry:litemedsam", "litemedsam", None),
    Encoder("sam-vit-b", "sam-vit-b", None, None),
    Encoder("hr-tiny", "registry:hr-tiny", "hr-tiny", None),
    Encoder("hr-small", "registry:hr-small", "hr-small", None),
    # the same encoders with activation checkpointing (recomputed in backward): training memory only differs
    Encoder("hr-tiny+ckpt", "registry:hr-tiny+ckpt", "hr-tiny", None),
    Encoder("hr-small+ckpt", "registry:hr-small+ckpt", "hr-small", None),
)


# ----------------------------------------------------------------------------------------------------
# Worker: one measurement in a fresh process
# ----------------------------------------------------------------------------------------------------

def build_encoder(builder: str):
    """The encoder module named by ``Encoder.builder`` (random weights, eval mode)."""
    if builder == "sam-vit-b":
        from medseg.models.vit_sam import build_sam_vit_b_encoder

        return build_sam_vit_b_encoder(1024).eval()
    from medseg.models import build_model

    name, _, option = builder.split(":", 1)[1].partition("+")
    encoder = build_model(name).image_encoder.eval()
    encoder.use_checkpoint = option == "ckpt"  # honoured in training mode only
    return encoder


def limit_address_space(gb: float) -> None:
    import resource

    limit = int(gb * 1024 ** 3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def time_runs(fn, runs: int, quick: bool = False) -> tuple[float, int]:
    """1 warm-up call, then the median of ``runs`` timed calls (1 if the warm-up took > SLOW_RUN_S).

    ``quick``: a warm-up slower than SLOW_RUN_S is itself the timed run (returned runs = 0); first-call
    overheads are well under a second, small against such a call.
    """
    start = time.perf_counter()
    fn()
    warmup = time.perf_counter() - start
    if warmup > SLOW_RUN_S:
        if quick:
            return warmup, 0
        runs = 1
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), runs


def worker_infer(spec: dict) -> dict:
    import torch

    encoder = build_encoder(spec["builder"])
    x = torch.randn(spec["batch"], 3, spec["resolution"], spec["resolution"])
    with torch.inference_mode():
        seconds, runs = time_runs(lambda: encoder(x), spec["runs"], spec.get("quick", False))
        result = {"seconds": seconds, "runs": runs}
        if spec.get("count_flops"):  # fallback when the meta-device analysis failed: one real batch-1 forward
            result.update(count_params_flops(encoder, x[:1]))
    return result


def worker_train(spec: dict) -> dict:
    import torch
    import torch.nn.functional as F

    encoder = build_encoder(spec["builder"]).train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-4)
    x = torch.randn(spec["batch"], 3, spec["resolution"], spec["resolution"])

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = encoder(x)
        F.mse_loss(out, torch.zeros_like(out)).backward()
        optimizer.step()

    seconds, runs = time_runs(step, spec["runs"], spec.get("quick", False))
    return {"seconds": seconds, "runs": runs}


def live_bytes_mode():
    """A dispatch mode that tracks the bytes of live tensor storages created under it (and the peak)."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.refs: dict[int, int] = {}
            self.sizes: dict[int, int] = {}
            self.live = self.peak = 0

        def _release(self, key: int) -> None:
            self.refs[key] -= 1
            if not self.refs[key]:
                del self.refs[key]
                self.live -= self.sizes.pop(key)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    key = storage._cdata
                    if key not in self.refs:
                        self.refs[key], self.sizes[key] = 0, storage.nbytes()
                        self.live += self.sizes[key]
                        self.peak = max(self.peak, self.live)
                    self.refs[key] += 1
                    weakref.finalize(t, self._release, key)
            return out

    return LiveBytes()


def worker_analyze(spec: dict) -> dict:
    """Meta-device pass at batch 1: parameters, FLOPs, peak live tensor bytes of inference and of
    forward + backward (no compute, no real memory)."""
    import torch
    import torch.nn.functional as F

    with torch.device("meta"):
        encoder = build_encoder(spec["builder"])
        x = torch.empty(1, 3, spec["resolution"], spec["resolution"])
    param_bytes = sum(p.numel() * p.element_size() for p in encoder.parameters())
    infer_mode = live_bytes_mode()
    with torch.inference_mode(), infer_mode:
        encoder(x)
    counted = count_params_flops(encoder, x)
    train_mode = live_bytes_mode()
    encoder.train()
    with train_mode:
        out = encoder(x)
        F.mse_loss(out, torch.zeros_like(out)).backward()
    return {**counted, "param_bytes": param_bytes,
            "infer_live_bytes": infer_mode.peak, "train_live_bytes": train_mode.peak,
            "input_bytes": x.numel() * x.element_size()}


def worker_baseline(spec: dict) -> dict:
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads()}


WORKERS = {"infer": worker_infer, "train": worker_train, "analyze": worker_analyze, "baseline": worker_baseline}


def worker_main(spec_json: str) -> int:
    """Run one measurement; print its result as one tagged JSON line (an ``error`` field on failure)."""
    spec = json.loads(spec_json)
    limit_address_space(spec["mem_limit_gb"])
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    import torch

    set_threads()
    torch.manual_seed(0)
    try:
        result = WORKERS[spec["mode"]](spec)
    except (RuntimeError, MemoryError) as exc:  # torch's allocator failing under the limit
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        oom = isinstance(exc, MemoryError) or "alloc" in text.lower() or "memory" in text.lower()
        result = {"error": ("out of memory: " if oom else "failed: ") + text[:300], "oom": oom}
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------
# Parent: launching workers
# ----------------------------------------------------------------------------------------------------

def launch(spec: dict, timeout_s: float) -> dict:
    """Run one worker under /usr/bin/time -v; its result dict plus ``peak_mb`` (or an ``error``)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
               OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=os.pathsep.join(
                   p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p))
    cmd = ["/usr/bin/time", "-v", sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_worker(proc)
        return {"error": f"timed out after {timeout_s:.0f} s"}
    except BaseException:  # e.g. Ctrl-C: do not leave the worker running in its own session
        kill_worker(proc)
        raise
    return parse_worker_output(proc.returncode, stdout, stderr)


def kill_worker(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's own process group (/usr/bin/time and its python child) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def parse_worker_output(returncode: int, stdout: str, stderr: str) -> dict:
    peak_mb = peak_mb_from_time(stderr)
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_TAG)]
    if lines:
        result = json.loads(lines[-1][len(RESULT_TAG):])
    elif "signal 9" in stderr or returncode in (-9, 137):
        result = {"error": "killed (out of memory?)", "oom": True}
    else:
        tail = [line for line in stderr.splitlines() if line.strip() and not line.startswith("\t")]
        result = {"error": f"worker exited {returncode}: {(tail[-1] if tail else '')[:300]}"}
    result["peak_mb"] = peak_mb
    return result


# ----------------------------------------------------------------------------------------------------
# Parent: planning, estimating and measuring
# ----------------------------------------------------------------------------------------------------

def available_encoders(wanted: list[str] | None) -> list[tuple[Encoder, tuple[int, ...] | None]]:
    """Encoders to measure, filtered by ``--models`` (``name`` or ``name@side``), skipping those whose
    registry model does not exist (with a printed note). Returns (encoder, sides from the filter or None)."""
    from medseg.models import list_models

    registered = set(list_models())
    chosen = []
    for encoder in ENCODERS:
        sides = None
        if wanted is not None:
            picks = [w for w in wanted if w.split("@")[0] == encoder.name]
            if not picks:
                continue
            at = [int(w.split("@")[1]) for w in picks if "@" in w]
            sides = tuple(sorted(at)) if at and len(at) == len(picks) else None
        if encoder.requires is not None and encoder.requires not in registered:
            print(f"note: skipping {encoder.name}: model {encoder.requires!r} is not in medseg.models.list_models()")
            continue
        chosen.append((encoder, sides))
    if wanted is not None:
        unknown = [w for w in wanted if w.split("@")[0] not in {e.name for e in ENCODERS}]
        if unknown:
            raise SystemExit(f"unknown --models {unknown}; known: {', '.join(e.name for e in ENCODERS)}")
    return chosen


def sides_for(encoder: Encoder, filtered: tuple[int, ...] | None, sweep: tuple[int, ...]) -> tuple[int, ...]:
    if encoder.resolutions is not None:
        return encoder.resolutions if filtered is None else tuple(s for s in filtered if s in encoder.resolutions)
    return filtered if filtered is not None else sweep


def estimate_mb(analysis: dict | None, mode: str, batch: int, baseline_mb: float) -> float | None:
    """Peak RSS estimate (MB) from the meta pass: baseline + weights (+ grads, AdamW state) + activations."""
    if not analysis or "error" in analysis:
        return None
    weights = analysis["param_bytes"] * (3 if mode == "train" else 1)  # training: + 2 AdamW states
    live = analysis["train_live_bytes" if mode == "train" else "infer_live_bytes"]
    activations = (live + analysis["input_bytes"]) * batch
    return baseline_mb + (weights + ESTIMATE_MARGIN * activations) / 2 ** 20


class Planner:
    """Decides whether to try a configuration: memory estimate (calibrated by earlier misses) and what
    already failed at a smaller side."""

    def __init__(self, mem_limit_gb: float, baseline_mb: float) -> None:
        self.limit_mb = SKIP_FRACTION * mem_limit_gb * 1024
        self.baseline_mb = baseline_mb
        # (model, mode) -> measured / estimated (above baseline) at the last side measured, at least 1
        self.calibration: dict[tuple[str, str], float] = {}
        self.failed: dict[tuple[str, str, int], int] = {}    # (model, mode, batch) -> smallest side that failed

    def estimate(self, model: str, analysis: dict | None, mode: str, batch: int) -> float | None:
        est = estimate_mb(analysis, mode, batch, self.baseline_mb)
        if est is None:
            return None
        return self.baseline_mb + (est - self.baseline_mb) * self.calibration.get((model, mode), 1.0)

    def reason_to_skip(self, model: str, side: int, analysis: dict | None, mode: str, batch: int) -> str | None:
        failed_at = self.failed.get((model, mode, batch))
        if failed_at is not None and side > failed_at:
            return f"{mode} batch {batch} did not fit / finish at {failed_at}"
        est = self.estimate(model, analysis, mode, batch)
        if est is not None and est > self.limit_mb:
            return f"{mode} batch {batch}: estimated peak {est / 1024:.1f} GB > {self.limit_mb / 1024:.0f} GB"
        return None

    def record(self, model: str, side: int, analysis: dict | None, mode: str, batch: int, result: dict) -> None:
        if "error" in result:
            self.failed.setdefault((model, mode, batch), side)
            return
        est = estimate_mb(analysis, mode, batch, self.baseline_mb)
        if est is not None and result.get("peak_mb") and est > self.baseline_mb:
            ratio = (result["peak_mb"] - self.baseline_mb) / (est - self.baseline_mb)
            self.calibration[(model, mode)] = max(1.0, ratio)  # the largest side so far predicts best


def empty_row(model: str, side: int, batch: int, analysis: dict | None) -> dict:
    ok = analysis is not None and "error" not in analysis
    return {"model": model, "resolution": side, "batch": batch,
            "params_m": round(analysis["params"] / 1e6, 3) if ok else None,
            "gflops": round(analysis["flops"] / 1e9, 2) if ok else None,
            "infer_s": None, "infer_peak_mb": None, "train_step_s": None, "train_peak_mb": None,
            "infer_runs": None, "train_runs": None, "est_infer_mb": None, "est_train_mb": None, "notes": []}


class Bench:
    """Measures encoders configuration by configuration, each in a fresh worker."""

    def __init__(self, args: argparse.Namespace, baseline_mb: float) -> None:
        self.quick = args.quick
        self.mem_limit_gb = args.mem_limit_gb
        self.timeout_s = QUICK_TIMEOUT_S if args.quick else TIMEOUT_S
        self.planner = Planner(args.mem_limit_gb, baseline_mb)

    def spec(self, encoder: Encoder, mode: str, side: int, batch: int = 1, runs: int = 1,
             count_flops: bool = False) -> dict:
        return {"mode": mode, "builder": encoder.builder, "resolution": side, "batch": batch, "runs": runs,
                "mem_limit_gb": self.mem_limit_gb, "count_flops": count_flops, "quick": self.quick}

    def run(self, encoder: Encoder, mode: str, side: int, batch: int, analysis: dict | None,
            runs: int) -> tuple[dict | None, str | None]:
        """(result, None) after trying, or (None, reason) when the plan skips it."""
        reason = self.planner.reason_to_skip(encoder.name, side, analysis, mode, batch)
        if reason:
            return None, reason
        label = f"{encoder.name}@{side} {mode} batch {batch}"
        print(f"  {label} ...", end="", flush=True)
        start = time.time()
        count_flops = mode == "infer" and (analysis is None or "error" in analysis)
        result = launch(self.spec(encoder, mode, side, batch, runs, count_flops), self.timeout_s)
        self.planner.record(encoder.name, side, analysis, mode, batch, result)
        status = result.get("error") or f"{result['seconds']:.2f} s, peak {_round(result['peak_mb'])} MB"
        print(f" {status} ({time.time() - start:.0f} s)", flush=True)
        return result, None

    def analyze(self, encoder: Encoder, side: int) -> dict:
        analysis = launch(self.spec(encoder, "analyze", side), self.timeout_s)
        if "error" in analysis:
            print(f"  {encoder.name}@{side}: meta-device analysis failed ({analysis['error']}); "
                  "no FLOPs or memory estimate")
        return analysis

    def measure_side(self, encoder: Encoder, side: int) -> list[dict]:
        """Rows of one encoder at one side: inference at batch 1, training at batch 1 (and 4)."""
        analysis = self.analyze(encoder, side)
        rows = {b: empty_row(encoder.name, side, b, analysis) for b in self.train_batches()}
        row1 = rows[1]
        row1["est_infer_mb"] = _round(self.planner.estimate(encoder.name, analysis, "infer", 1))
        result, reason = self.run(encoder, "infer", side, 1, analysis, QUICK_INFER_RUNS if self.quick else INFER_RUNS)
        fill(row1, "infer", result, reason)
        if result and "flops" in result:  # counted on a real forward: the meta-device analysis failed
            for row in rows.values():
                row["params_m"], row["gflops"] = round(result["params"] / 1e6, 3), round(result["flops"] / 1e9, 2)
        for batch, row in rows.items():
            row["est_train_mb"] = _round(self.planner.estimate(encoder.name, analysis, "train", batch))
            reason = self.quick_time_skip(row1) if self.quick else None
            result = None
            if reason is None:
                runs = QUICK_TRAIN_RUNS if self.quick else TRAIN_RUNS
                result, reason = self.run(encoder, "train", side, batch, analysis, runs)
            fill(row, "train", result, reason)
        return list(rows.values())

    def train_batches(self) -> tuple[int, ...]:
        return (1,) if self.quick else TRAIN_BATCHES

    @staticmethod
    def quick_time_skip(row1: dict) -> str | None:
        """--quick: skip training whose measurement would exceed QUICK_MAX_TRAIN_S: a step is predicted
        at 3x the inference time; warm-up + 1 step, or the one step alone if slower than SLOW_RUN_S."""
        if row1["infer_s"] is None:
            return None
        step = 3 * row1["infer_s"]
        predicted = step if step > SLOW_RUN_S else (1 + QUICK_TRAIN_RUNS) * step
        if predicted > QUICK_MAX_TRAIN_S:
            return (f"--quick: training predicted ~{predicted:.0f} s (a step ~3x inference) "
                    f"> {QUICK_MAX_TRAIN_S:.0f} s")
        return None


def _round(value: float | None, digits: int = 0) -> float | None:
    return None if value is None else round(value, digits)


def fill(row: dict, mode: str, result: dict | None, reason: str | None) -> None:
    """Put a worker's result (or the reason it is null) into ``row``'s infer_* or train_* fields."""
    time_key, peak_key = ("infer_s", "infer_peak_mb") if mode == "infer" else ("train_step_s", "train_peak_mb")
    if reason is not None:
        row["notes"].append(f"{mode}: skipped, {reason}")
        return
    if "error" in result:
        row["notes"].append(f"{mode}: {result['error']}")
        return
    row[time_key] = round(result["seconds"], 4)
    row[peak_key] = _round(result["peak_mb"])
    row[f"{mode}_runs"] = result["runs"]


# ----------------------------------------------------------------------------------------------------
# Report: table, ratios, plot
# ----------------------------------------------------------------------------------------------------

def print_table(rows: list[dict], baseline_mb: float) -> None:
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    print(f"\n{'model@res':<24}{'batch':>5}{'params M':>10}{'GFLOPs':>9}{'infer s':>9}{'infer MB':>10}"
          f"{'train s':>9}{'train MB':>10}")
    for r in rows:
        print(f"{r['model'] + '@' + str(r['resolution']):<24}{r['batch']:>5}{f(r['params_m'], '.2f'):>10}"
              f"{f(r['gflops'], '.1f'):>9}{f(r['infer_s'], '.3f'):>9}{f(r['infer_peak_mb'], '.0f'):>10}"
              f"{f(r['train_step_s'], '.3f'):>9}{f(r['train_peak_mb'], '.0f'):>10}")
    print(f"(MB: peak RSS of the whole worker process; a worker that only imports torch: {baseline_mb:.0f} MB)")
    for r in rows:
        for note in r["notes"]:
            print(f"  {r['model']}@{r['resolution']} batch {r['batch']}: {note}")


def ratio_lines(rows: list[dict]) -> list[str]:
    """'X@S: inference N.Nx faster/slower than litemedsam-tinyvit@256 (a s vs b s); training ...'."""
    ref = next((r for r in rows if r["model"] == REFERENCE and r["batch"] == 1), None)
    if ref is None or ref["infer_s"] is None:
        return []
    lines = []
    for r in rows:
        if r is ref or r["batch"] != 1:
            continue
        parts = [_ratio("inference", r["infer_s"], ref["infer_s"]),
                 _ratio("training step", r["train_step_s"], ref["train_step_s"])]
        parts = [p for p in parts if p]
        if parts:
            lines.append(f"{r['model']}@{r['resolution']}: " + "; ".join(parts)
                         + f" than {REFERENCE}@{ref['resolution']}")
    return lines


def _ratio(what: str, value: float | None, ref: float | None) -> str | None:
    if value is None or not ref:
        return None
    if value <= ref:
        return f"{what} {ref / value:.1f}x faster ({value:.3f} s vs {ref:.3f} s)"
    return f"{what} {value / ref:.1f}x slower ({value:.3f} s vs {ref:.3f} s)"


def plot(rows: list[dict], path: Path) -> Path:
    """Two log-log panels vs resolution, batch 1: peak memory and time; training solid, inference dashed;
    one colour per model, one legend for both on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullLocator

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        mine = sorted((r for r in rows if r["model"] == model and r["batch"] == 1), key=lambda r: r["resolution"])
        for ax, key, style, marker, what in ((ax_mem, "train_peak_mb", "-", "o", "train step"),
                                             (ax_mem, "infer_peak_mb", "--", "s", "inference"),
                                             (ax_time, "train_step_s", "-", "o", "train step"),
                                             (ax_time, "infer_s", "--", "s", "inference")):
            pts = [(r["resolution"], r[key]) for r in mine if r[key] is not None]
            if pts:
                ax.plot(*zip(*pts), style, marker=marker, color=colors[i % len(colors)], label=f"{model} {what}")
    sides = sorted({r["resolution"] for r in rows})
    for ax, title, ylabel in ((ax_mem, "peak memory", "peak RSS (MB, whole process)"),
                              (ax_time, "time (median)", f"seconds (CPU, {THREADS} threads)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sides, [str(s) for s in sides])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set(title=title, xlabel="input side (px)", ylabel=ylabel)
        ax.grid(True, alpha=0.3)
    handles, labels = ax_time.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------

NOTES = [
    "peak MB = 'Maximum resident set size' of /usr/bin/time -v for a fresh worker process: the whole process "
    "(Python, torch, model, activations, optimizer state), not only tensors; baseline_rss_mb is a worker "
    "that only imports torch and builds nothing: subtract it for the model's own share",
    "GFLOPs = FLOPs / 1e9 of one batch-1 forward as counted by torch.utils.flop_counter.FlopCounterMode on the "
    "meta device: 2 FLOPs per multiply-add, convolutions, matmuls and attention only; same value on every "
    "row of a model and side (per image)",
    "inference: torch.inference_mode, batch 1, 1 warm-up then the median of infer_runs runs; batch-4 rows "
    "have no inference numbers",
    "infer_runs / train_runs = 0 (--quick only): the first call took > 20 s and its own time is reported, "
    "without a separate warm-up",
    "training step: forward, MSE against a zero target of the output's shape, backward, AdamW step (no "
    "activation checkpointing), 1 warm-up then the median of train_runs steps",
    "null = not run (reason in the row's notes: estimated above the memory limit, failed at a smaller side, "
    "--quick time limit) or failed (out of memory under the address-space limit, timeout)",
    "est_*_mb: the pre-run estimate (meta-device live tensor bytes x margin + weights + baseline)",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="512 and 1024 only, training batch 1, 1 timed run")
    parser.add_argument("--json", type=Path, help="output JSON (default benchmarks/results/efficiency[_quick].json)")
    parser.add_argument("--models", nargs="+", help="only these encoders: NAME or NAME@SIDE "
                        f"({', '.join(e.name for e in ENCODERS)})")
    parser.add_argument("--resolutions", nargs="+", type=int, help="sides of the sweep (default 512 1024 2048)")
    parser.add_argument("--mem-limit-gb", type=float, default=MEM_LIMIT_GB,
                        help="address-space limit per worker; estimated peaks above it are not tried")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    if not Path("/usr/bin/time").exists():
        sys.exit("/usr/bin/time is needed for peak memory (apt-get install time)")
    start = time.time()
    sweep = tuple(args.resolutions or (QUICK_RESOLUTIONS if args.quick else RESOLUTIONS))
    bad = [s for s in sweep if s % 32]
    if bad:
        sys.exit(f"--resolutions must be divisible by 32 (the hr encoders need it): {bad}")
    encoders = available_encoders(args.models)
    baseline = launch({"mode": "baseline", "mem_limit_gb": args.mem_limit_gb}, 120)
    if "error" in baseline or baseline.get("peak_mb") is None:
        sys.exit(f"baseline worker failed: {baseline}")
    bench = Bench(args, baseline["peak_mb"])
    print(f"baseline worker (imports torch only): {baseline['peak_mb']:.0f} MB peak RSS")
    rows = []
    for encoder, filtered in encoders:
        for side in sides_for(encoder, filtered, sweep):
            rows.extend(bench.measure_side(encoder, side))
    print_table(rows, baseline["peak_mb"])
    ratios = ratio_lines(rows)
    if ratios:
        print(f"\nlatency vs {REFERENCE}@256 (batch 1):")
        print("\n".join("  " + line for line in ratios))
    out = args.json or REPO / "benchmarks" / "results" / f"efficiency{'_quick' if args.quick else ''}.json"
    result = {"rows": rows, "baseline_rss_mb": round(baseline["peak_mb"]), "notes": NOTES,
              "ratios_vs_reference": ratios, "threads": THREADS, "mem_limit_gb": args.mem_limit_gb,
              "quick": args.quick, "resolutions": list(sweep), "torch": baseline["torch"],
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "seconds": round(time.time() - start, 1)}
    write_json(result, out)
    png = plot(rows, out.with_suffix(".png"))
    print(f"\nwrote {out} and {png} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
