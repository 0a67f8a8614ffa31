"""Does ``torch.compile`` (inductor) speed up the image encoder on this CPU? Eager against compiled, same run.

    python benchmarks/torch_compile.py [--model litemedsam] [--json OUT]

The encoder as the Predictor runs it (eval, channels-last, no autograd), 2 threads, median of 5 runs
after 2 warm-ups; the compile time (first call) and the largest difference of the outputs are reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, THREADS, median_seconds, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="litemedsam", choices=("litemedsam", "hr-small", "hr-tiny"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    from medseg.models import build_model
    from medseg.models.build import has_published_weights

    torch.set_num_threads(THREADS)
    model = build_model(args.model, pretrained=has_published_weights(args.model)).eval()
    encoder = model.image_encoder.to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, model.image_size, model.image_size)
    with torch.inference_mode():
        eager_s = median_seconds(lambda: encoder(x), 5, warmup=2)
        reference = encoder(x)
        compiled = torch.compile(encoder)
        start = time.perf_counter()
        out = compiled(x)
        compile_s = time.perf_counter() - start
        compiled_s = median_seconds(lambda: compiled(x), 5, warmup=2)
    result = {"model": args.model, "side": model.image_size, "threads": THREADS, "eager_s": round(eager_s, 3),
              "compiled_s": round(compiled_s, 3), "compile_s": round(compile_s, 1),
              "speedup": round(eager_s / compiled_s, 2), "max_abs_difference": float((out - reference).abs().max())}
    print(f"{args.model} encoder at {model.image_size}: eager {eager_s:.3f} s, compiled {compiled_s:.3f} s "
          f"(x{eager_s / compiled_s:.2f}), compiling took {compile_s:.0f} s, outputs differ by at most "
          f"{result['max_abs_difference']:.1e}")
    out_path = args.json or REPO / "benchmarks" / "results" / f"torch_compile_{args.model}.json"
    print(f"wrote {write_json(result, out_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
