"""The same code on a GPU: CUDA (fp32 and bf16 autocast) against the CPU on the demo images.

For each built-in demo image (medseg.demo), the pretrained model segments the demo box on the CPU
and on CUDA; prints the Dice between the masks and the largest logit difference, and the median
encoder and decoder latency on each device.

    python benchmarks/device_check.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medseg.demo import DEMO_CASES
from medseg.infer import Predictor
from medseg.data.cases import plane
from medseg.io import read_image
from medseg.models import build_model


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _median_ms(fn, device: torch.device, runs: int = 10) -> float:
    fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to compare")
        return 0
    cpu = Predictor(build_model("litemedsam", pretrained=True), device="cpu")
    gpu = Predictor(build_model("litemedsam", pretrained=True), device="cuda")
    rows = []
    for case in DEMO_CASES:
        image = read_image(case.locate())
        picture, modality = plane(image), image.meta.modality
        outs = {}
        for name, predictor, dtype in (("cpu", cpu, None), ("cuda", gpu, None), ("cuda_bf16", gpu, torch.bfloat16)):
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                predictor.set_image(picture, modality)
                outs[name] = predictor.predict(box=list(case.box))
        ref = outs["cpu"]
        row = {"case": case.name, "shape": list(picture.shape)}
        for name in ("cuda", "cuda_bf16"):
            row[f"{name}_dice_vs_cpu"] = _dice(outs[name].masks[0, 0], ref.masks[0, 0])
            row[f"{name}_max_logit_diff"] = float(np.abs(outs[name].logits - ref.logits).max())
        rows.append(row)
        print(row)
    x = torch.rand(1, 3, 256, 256)
    timing = {}
    for name, predictor in (("cpu", cpu), ("cuda", gpu)):
        dev = predictor.device
        xd, model = x.to(dev), predictor.model
        with torch.no_grad():
            emb = model.encode(xd)
            box = torch.tensor([[40.0, 50.0, 160.0, 190.0]], device=dev)
            timing[name] = {"encoder_ms": _median_ms(lambda: model.encode(xd), dev),
                            "decoder_ms": _median_ms(lambda: model.decode(emb, boxes=box), dev)}
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cases": rows, "latency": timing}
    print(json.dumps(timing, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    worst = min(min(r["cuda_dice_vs_cpu"], r["cuda_bf16_dice_vs_cpu"]) for r in rows)
    print(f"worst Dice vs CPU: {worst:.4f}")
    return 0 if worst >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
