"""Inference engines side by side: model x engine x precision on the 2-core CPU, and whole-job latency.

Rows: LiteMedSAM (TinyViT at 256, shipped weights), hr-tiny and hr-small (at 1024; hr-small the shipped
distilled student, hr-tiny has no trained weights, so it is timed but has no Dice) x
{torch fp32 (the reference row), torch bf16, onnxruntime fp32 / fp16 storage / int8, openvino fp32 /
bf16}. Each row runs in a fresh process (``/usr/bin/time -v`` gives its peak memory), with 2 threads
and OMP spin-waiting off; the ONNX export it needs is made first in a process of its own (not timed).

Columns: encoder ms (median of ``RUNS`` on a real image after one warm-up run), decoder ms per prompt
set (``decode`` of one box: prompt encoder + mask decoder + upsampling to the model input, median of
``DECODE_RUNS``), click ms (``Predictor.predict`` of one click: what a UI waits for), peak MB, achieved
GFLOP/s (the encoder's FLOPs counted on torch fp32, over its time) and its fraction of the same run's
measured 2048x2048 matmul GFLOP/s at that precision (bf16 rows against bf16 matmul, all others against
fp32), speed-up of the encoder over torch fp32 of the same model, and on every 2D test split: box Dice
change against torch fp32 (``medseg evaluate``'s box protocol, one box per component) and mask
agreement (mean and minimum Dice between the row's masks and torch fp32's, per case and class).

End to end (fresh processes): ``medseg --help`` and ``medseg predict`` of one image with a box
(medians of 3); ``medseg predict FOLDER --task kvasir_seg`` on 50 kvasir images (seconds per image)
and ``medseg predict`` of one la_heart_mri volume (88 slices) from a 3D box, slice-wise (one run each);
on the default engine (torch fp32) and, when OpenVINO is installed, again with ``--engine openvino
--precision bf16`` (``"fast"``). ``--end-to-end-only`` reruns just these into the existing JSON.

    python benchmarks/engines.py            # every test case (long: each row evaluates all 2D test splits)
    python benchmarks/engines.py --quick    # 3 cases per set, fewer runs: a smoke test
    python benchmarks/engines.py --cases 0  # timing only (no Dice)

JSON: ``{"rows": [{"model", "side", "engine", "precision", "encoder_ms", "decoder_ms", "click_ms",
"peak_mb", "gflops_per_s", "roofline_fraction", "decoder_gflop" (torch fp32 rows), "speedup", "dice": {SET: d}, "dice_delta": {SET: d},
"agreement": {SET: {"mean", "min"}}}], "matmul_gflops": {"fp32", "bf16"}, "end_to_end": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_DATA, REPO, THREADS, count_params_flops, median_seconds, peak_mb_from_time,  # noqa: E402
                     require_data, write_json)

MODELS = {"litemedsam": True, "hr-tiny": False, "hr-small": True}  # name -> has trained weights (Dice rows)
VARIANTS = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"),
            ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16")]
SETS = ["kvasir_seg", "ph2_derm", "dsb2018_nuclei", "busi", "drishti_gs1_odoc", "isbi2012_em"]
RUNS, DECODE_RUNS = 7, 30
QUICK = {"runs": 2, "decode_runs": 5, "cases": 3}


class _Decode:
    """``decode`` of one box as a callable module for the flop counter (parameters: the model's)."""

    def __init__(self, model, box, features) -> None:
        self.model, self.box, self.features = model, box, features

    def __call__(self, embedding):
        return self.model.decode(embedding, self.box, None, None, False, self.features)

    def parameters(self):
        return self.model.parameters()


# ---- worker: one row in a fresh process ------------------------------------------------------------
def worker(spec: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    from medseg.data.cases import load_case, plane
    from medseg.data.datasets import dataset_cases, evenly_spaced
    from medseg.data.masks import MIN_SIZE, class_masks, dice
    from medseg.data.preprocess import prepare_image
    from medseg.eval.evaluate import SliceSegmenter
    from medseg.infer import Predictor
    from medseg.models import build_model
    from medseg.models.build import has_published_weights

    name = spec["model"]
    model = build_model(name, pretrained=has_published_weights(name))
    predictor = Predictor(model, device="cpu", engine=spec["engine"], precision=spec["precision"])
    if spec.get("prepare"):
        return {"prepared": True}
    engine = predictor.model
    image = plane(load_case(dataset_cases(spec["probe_root"], "test")[0])[0])
    x, _ = prepare_image(image, engine.image_size)
    with torch.no_grad():
        encoder_s = median_seconds(lambda: engine.encode_features(x), spec["runs"])
        embedding, features = engine.encode_features(x)
        box = torch.tensor([[0.2, 0.2, 0.7, 0.6]]) * engine.image_size
        decoder_s = median_seconds(lambda: engine.decode(embedding, box, None, None, False, features), spec["decode_runs"])
    predictor.set_image(image)
    h, w = image.shape[:2]
    click_s = median_seconds(lambda: predictor.predict(points=np.array([[w / 2, h / 2]]), multimask=True),
                      spec["decode_runs"])
    row = {"encoder_ms": round(1e3 * encoder_s, 1), "decoder_ms": round(1e3 * decoder_s, 2),
           "click_ms": round(1e3 * click_s, 1)}
    if spec["engine"] == "torch" and spec["precision"] == "fp32":
        with torch.no_grad():
            row["gflop"] = round(count_params_flops(model.image_encoder, x)["flops"] / 1e9, 3)
        decoder = _Decode(model, box, features)
        with torch.enable_grad():  # the flop counter's upsampling rule needs autograd on
            row["decoder_gflop"] = round(count_params_flops(decoder, embedding)["flops"] / 1e9, 3)
    if not spec["sets"]:
        return row
    dice_by_set, agreement = {}, {}
    reference = Path(spec["masks"])
    for set_name, root in spec["sets"].items():
        scores, agree = [], []
        for case in evenly_spaced(dataset_cases(root, "test"), spec["cases"]):
            picture, label = load_case(case)
            segment = SliceSegmenter(predictor, plane(picture), "box", MIN_SIZE)
            for class_id, gt in class_masks(label.array[0], case.mask_path):
                pred, _ = segment(gt)
                scores.append(dice(pred, gt))
                path = reference / f"{set_name}__{case.stem}__{class_id}.npy"
                if spec["reference"]:
                    np.save(path, np.packbits(pred))
                else:
                    ref = np.unpackbits(np.load(path), count=pred.size).reshape(pred.shape).astype(bool)
                    agree.append(dice(pred, ref))
        dice_by_set[set_name] = round(float(np.mean(scores)), 4)
        if agree:
            agreement[set_name] = {"mean": round(float(np.mean(agree)), 4), "min": round(float(np.min(agree)), 4)}
    return {**row, "dice": dice_by_set, "agreement": agreement}


def matmul_gflops(threads: int, runs: int) -> dict[str, float]:
    """Measured 2048x2048 matmul GFLOP/s in fp32 and bf16 with ``threads`` threads (this run's roofline)."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        seconds = median_seconds(lambda: a @ b, runs)
        out[label] = round(2 * 2048 ** 3 / seconds / 1e9, 1)
    return out


def launch(spec: dict, timeout_s: float = 3600) -> dict:
    """One worker under /usr/bin/time -v: its result and ``peak_mb``, or ``error``."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(spec["threads"]))
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    timer = Path("/usr/bin/time")
    if timer.exists():
        cmd = [str(timer), "-v", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    result = json.loads(lines[-1])
    peak = peak_mb_from_time(proc.stderr)
    if peak is not None:
        result["peak_mb"] = round(peak)
    return result


# ---- whole-job latency -------------------------------------------------------------------------------
FAST = ("openvino", "bf16")  # the fastest row of the table, run end to end beside the default engine


def end_to_end(data: Path, quick: bool) -> dict:
    """``medseg --help``, then one image, a folder and a volume on the default engine (torch fp32) and, when
    OpenVINO is installed, on ``FAST`` under ``"fast"`` (its export made before the clock starts)."""
    import importlib.util

    out: dict = {"help_s": _timed_cli(["--help"], runs=1 if quick else 3)}
    out.update(_jobs(data, quick, ()))
    if importlib.util.find_spec(FAST[0]) is not None:
        engine = ("--engine", FAST[0], "--precision", FAST[1])
        out["fast"] = {"engine": FAST[0], "precision": FAST[1], **_jobs(data, quick, engine)}
    return out


def _timed_cli(args: list[str], clean: Path | None = None, runs: int = 1, before=None) -> float:
    """Median wall-clock seconds of ``medseg ARGS`` (the console script a user runs) in fresh processes;
    ``clean`` is deleted and ``before()`` called ahead of each run, off the clock."""
    medseg = [str(Path(sys.executable).parent / "medseg")]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(THREADS))
    times = []
    for _ in range(runs):
        if clean is not None:
            shutil.rmtree(clean, ignore_errors=True)
        if before is not None:
            before()
        start = time.perf_counter()
        proc = subprocess.run([*medseg, *args, "--threads", str(THREADS)] if args[0] != "--help"
                              else [*medseg, *args], capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"medseg {' '.join(args)} failed: {proc.stderr[-500:]}")
    return round(statistics.median(times), 2)


def _empty_compile_cache() -> None:
    """Delete OpenVINO's compiled graphs from every export in medseg's export cache."""
    from medseg.engines.runtime import EXPORT_CACHE, OPENVINO_CACHE

    for folder in EXPORT_CACHE.expanduser().glob(f"*/{OPENVINO_CACHE}"):
        shutil.rmtree(folder, ignore_errors=True)


def _jobs(data: Path, quick: bool, engine: tuple[str, ...]) -> dict:
    """One kvasir image from a box (median of 3), 50 kvasir images with --task kvasir_seg, one la_heart_mri
    volume from a 3D box (one run each), with the ``engine`` options."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = sorted((data / "kvasir_seg" / "images").iterdir())[0]
        one = ["predict", str(image), "--box", "100", "100", "400", "400", "--out", str(tmp / "one.png"), "--overwrite",
               *engine]
        if engine:
            _timed_cli(one)  # the export and OpenVINO's first compile, once, untimed
        out["predict_one_image_s"] = _timed_cli(one, runs=1 if quick else 3)
        if "openvino" in engine:  # the same with OpenVINO's compile cache emptied first: what it saves
            out["predict_one_image_compiling_s"] = _timed_cli(one, runs=1 if quick else 3, before=_empty_compile_cache)
        folder = tmp / "fifty"
        folder.mkdir()
        count = 5 if quick else 50
        for path in sorted((data / "kvasir_seg" / "images").iterdir())[:count]:
            shutil.copy(path, folder / path.name)
        labels = tmp / "labels"
        seconds = _timed_cli(["predict", str(folder), "--task", "kvasir_seg", "--out", str(labels), *engine],
                             clean=labels)
        out["predict_folder"] = {"images": count, "seconds": seconds, "seconds_per_image": round(seconds / count, 3),
                                 "mode": "--task kvasir_seg (automatic, universal model at 256)"}
        volume = data / "la_heart_mri" / "imagesTr" / "la_000.nii.gz"
        if volume.is_file():
            out["predict_volume_s"] = _timed_cli(["predict", str(volume), "--box", "10", "20", "0", "161", "112", "87",
                                                  "--out", str(tmp / "vol.nii.gz"), "--overwrite", *engine])
            out["volume"] = f"{volume.name}: a 3D box around the atrium over all 88 slices, slice-wise"
    return out


# ---- the table -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 cases per set, fewer runs (a smoke test)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--cases", type=int, help="cases per test split (default: all; --quick: 3; 0: no Dice, "
                                                 "timing only)")
    parser.add_argument("--no-end-to-end", action="store_true")
    parser.add_argument("--end-to-end-only", action="store_true",
                        help="rerun only the whole-job latencies, into the existing JSON's end_to_end")
    parser.add_argument("--json", type=Path, help="output (default benchmarks/results/engines[_quick].json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    require_data(args.data)
    start = time.perf_counter()
    out = args.json or REPO / "benchmarks" / "results" / f"engines{'_quick' if args.quick else ''}.json"
    if args.end_to_end_only:
        result = json.loads(out.read_text()) if out.is_file() else {}
        result["end_to_end"] = end_to_end(args.data, args.quick)
        print("end to end:", json.dumps(result["end_to_end"]))
        print(f"wrote {write_json(result, out)}")
        return 0
    runs, decode_runs = (QUICK["runs"], QUICK["decode_runs"]) if args.quick else (RUNS, DECODE_RUNS)
    cases = args.cases if args.cases is not None else (QUICK["cases"] if args.quick else None)
    roofline = matmul_gflops(THREADS, 3 if args.quick else 9)
    print(f"matmul 2048^3 with {THREADS} threads: fp32 {roofline['fp32']} GFLOP/s, bf16 {roofline['bf16']} GFLOP/s")
    sets = {s: str(args.data / s) for s in SETS}
    rows = []
    with tempfile.TemporaryDirectory() as masks:
        for model in args.models:
            side = 256 if model == "litemedsam" else 1024
            reference: dict = {}
            for engine, precision in VARIANTS:
                spec = {"model": model, "engine": engine, "precision": precision, "threads": THREADS, "runs": runs,
                        "decode_runs": decode_runs, "probe_root": sets["kvasir_seg"], "cases": cases,
                        "sets": sets if MODELS[model] and cases != 0 else {}, "masks": masks,
                        "reference": (engine, precision) == ("torch", "fp32")}
                if engine != "torch":
                    prepared = launch({**spec, "prepare": True})
                    if "error" in prepared:
                        print(f"{model} {engine} {precision}: export failed: {prepared['error']}")
                t0 = time.perf_counter()
                result = launch(spec)
                row = {"model": model, "side": side, "engine": engine, "precision": precision, **result,
                       "seconds": round(time.perf_counter() - t0, 1)}
                if spec["reference"]:
                    reference = row
                fill(row, reference, roofline)
                rows.append(row)
                print_row(row)
    result = {"threads": THREADS, "quick": args.quick, "cases_per_set": "all" if cases is None else cases,
              "matmul_gflops": roofline,
              "rows": rows}
    if not args.no_end_to_end:
        result["end_to_end"] = end_to_end(args.data, args.quick)
        print("end to end:", json.dumps(result["end_to_end"]))
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(f"wrote {write_json(result, out)}")
    return 0


def fill(row: dict, reference: dict, roofline: dict) -> None:
    """Derived columns: GFLOP/s, roofline fraction, speed-up and Dice change against the reference row."""
    if "error" in row or "encoder_ms" not in reference:
        return
    gflop = reference.get("gflop")
    if gflop:
        row["gflops_per_s"] = round(gflop / (row["encoder_ms"] / 1e3), 1)
        peak = roofline["bf16" if row["precision"] == "bf16" else "fp32"]
        row["roofline_fraction"] = round(row["gflops_per_s"] / peak, 3)
    row["speedup"] = round(reference["encoder_ms"] / row["encoder_ms"], 2)
    if row.get("dice") and reference.get("dice"):
        row["dice_delta"] = {s: round(row["dice"][s] - reference["dice"][s], 4) for s in row["dice"]}


def print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['model']:<11}{row['engine']:<12}{row['precision']:<5} ERROR {row['error']}")
        return
    delta = row.get("dice_delta") or {}
    agree = row.get("agreement") or {}
    worst = max(delta.values(), key=abs) if delta else None
    print(f"{row['model']:<11}{row['engine']:<12}{row['precision']:<5} enc {row['encoder_ms']:>7.1f} ms  "
          f"dec {row['decoder_ms']:>6.2f} ms  click {row['click_ms']:>6.1f} ms  peak {row.get('peak_mb', 0):>5} MB  "
          f"{row.get('gflops_per_s', 0):>6.1f} GFLOP/s ({100 * row.get('roofline_fraction', 0):.0f}% of matmul)  "
          f"x{row.get('speedup', 1):.2f}"
          + (f"  worst dice change {worst:+.4f}" if worst is not None else "")
          + (f"  min agreement {min(a['min'] for a in agree.values()):.3f}" if agree else ""))


if __name__ == "__main__":
    sys.exit(main())
