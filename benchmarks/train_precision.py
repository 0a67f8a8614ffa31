"""One training step (forward + backward) of the 3D models in fp32 against bf16 autocast on the CPU, side by
side in one run: why the 3D configs set ``train.amp: bf16`` (this CPU has AMX).

    python benchmarks/train_precision.py [--quick] [--json OUT]

Per model (``unet3d``, ``vit3d``) a batch of 6 random 48 x 64 x 48 volumes (msd_hippocampus's patch and
batch), the median of 5 timed steps after 2 warm-up steps, 2 threads; JSON
``{"models": {NAME: {"fp32_s", "bf16_s", "speedup"}}}``. Nothing is trained to a result here: this
times the arithmetic only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, median_seconds, set_threads, write_json  # noqa: E402


def step_seconds(name: str, bf16: bool, runs: int) -> float:
    import torch

    from medseg.models import build_model

    model = build_model(name).train()
    x = torch.randn(6, 1, 48, 64, 48, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = model(x)
        y.float().mean().backward()

    return median_seconds(step, runs, warmup=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 timed steps, the U-Net only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    set_threads()
    runs = 2 if args.quick else 5
    results = {}
    for name in ["unet3d"] if args.quick else ["unet3d", "vit3d"]:
        fp32, bf16 = step_seconds(name, False, runs), step_seconds(name, True, runs)
        results[name] = {"fp32_s": round(fp32, 3), "bf16_s": round(bf16, 3), "speedup": round(fp32 / bf16, 2)}
        print(f"{name}: one step at batch 6 x 48x64x48: fp32 {fp32:.2f} s, bf16 autocast {bf16:.2f} s "
              f"(x{fp32 / bf16:.2f})", flush=True)
    out = args.json or REPO / "benchmarks" / "results" / f"train_precision{'_quick' if args.quick else ''}.json"
    print(f"wrote {write_json({'threads': 2, 'quick': args.quick, 'models': results}, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
