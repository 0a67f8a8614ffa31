"""The torch engine's inference path against its plain (training) path, in one run, and where the decoder's
time goes.

    python benchmarks/torch_path.py [--model litemedsam] [--json OUT]

* plain: what runs with autograd on (no parameter needing a gradient, so nothing is recorded): each
  BatchNorm after its convolution, SDPA for TinyViT's window attention, NCHW memory layout;
* inference: what the Predictor runs (no autograd, the model channels-last): BatchNorm folded into the
  convolution, window attention as one baddbmm + softmax + bmm;
* the inference encoder per image at batch 1 and 4 (why volumes go one slice at a time on the CPU);
* the decoder's operators for one box (torch.profiler, self CPU time per decode).

2 threads; encoder medians of 5 runs, decoder medians of 20, after warm-ups; a real kvasir test image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO, THREADS, median_seconds, require_data, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="litemedsam", choices=("litemedsam", "hr-small"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    require_data(args.data)
    import torch

    from medseg.data.cases import load_case, plane
    from medseg.data.datasets import dataset_cases
    from medseg.data.preprocess import prepare_image
    from medseg.models import build_model

    torch.set_num_threads(THREADS)
    model = build_model(args.model, pretrained=True).eval().requires_grad_(False)
    x, _ = prepare_image(plane(load_case(dataset_cases(args.data / "kvasir_seg", "test")[0])[0]), model.image_size)
    box = torch.tensor([[0.2, 0.2, 0.7, 0.6]]) * model.image_size

    def timings() -> dict:
        embedding, features = model.encode_features(x)
        return {"encoder_s": median_seconds(lambda: model.encode_features(x), 5),
                "decoder_ms": 1e3 * median_seconds(lambda: model.decode(embedding, box, features=features), 20, 3)}

    with torch.enable_grad():
        plain = timings()
    model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = timings()
        batch4 = median_seconds(lambda: model.encode_features(x.repeat(4, 1, 1, 1)), 3) / 4
        embedding, features = model.encode_features(x)
        with torch.profiler.profile() as profile:
            for _ in range(5):
                model.decode(embedding, box, features=features)
    ops = sorted(profile.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
    decoder_ops = {e.key: round(e.self_cpu_time_total / 5 / 1e3, 2) for e in ops}  # ms per decode
    result = {"model": args.model, "threads": THREADS,
              "plain": {k: round(v, 3) for k, v in plain.items()}, "inference": {k: round(v, 3) for k, v in fast.items()},
              "encoder_speedup": round(plain["encoder_s"] / fast["encoder_s"], 2),
              "decoder_speedup": round(plain["decoder_ms"] / fast["decoder_ms"], 2),
              "encoder_s_per_image": {"batch_1": round(fast["encoder_s"], 3), "batch_4": round(batch4, 3)},
              "decoder_ops_ms": decoder_ops}
    print(f"{args.model}: encoder plain {plain['encoder_s']:.3f} s -> inference {fast['encoder_s']:.3f} s "
          f"(x{result['encoder_speedup']}); decoder {plain['decoder_ms']:.1f} -> {fast['decoder_ms']:.1f} ms "
          f"(x{result['decoder_speedup']}); encoder per image: batch 1 {fast['encoder_s']:.3f} s, batch 4 {batch4:.3f} s")
    print("decoder, self CPU ms per decode: " + ", ".join(f"{k} {v}" for k, v in decoder_ops.items()))
    out = args.json or REPO / "benchmarks" / "results" / f"torch_path_{args.model}.json"
    print(f"wrote {write_json(result, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
