"""Static against dynamic int8 for the image encoder (onnxruntime), measured before choosing one.

medseg's ``--precision int8`` quantises the encoder dynamically (MatMul/Gemm weights int8, activations
quantised per call). This script asks whether static quantisation (activation ranges calibrated once on
train-split images, QDQ, per-channel weights) would do better, as issue #12 asks: it exports the shipped
model's fp32 encoder, quantises it three ways, and on test-split images of every 2D set reports the
relative error of the 256x64x64 embedding against fp32 (``||int8 - fp32|| / ||fp32||``) and the
encoder's time (median of 5 runs, 2 threads).

    python benchmarks/int8_static.py [--model litemedsam] [--quick] [--json OUT]

Calibration: ``--calibration`` train images per set (default 3, 18 in all); test: 2 per set (12).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO, THREADS, median_seconds, require_data, write_json  # noqa: E402

SETS = ["kvasir_seg", "ph2_derm", "dsb2018_nuclei", "busi", "drishti_gs1_odoc", "isbi2012_em"]


def images(data: Path, split: str, per_set: int, size: int) -> list[np.ndarray]:
    """``per_set`` evenly spaced images of ``split`` of every set, prepared as the encoder takes them."""
    from medseg.data.cases import load_image, plane
    from medseg.data.datasets import dataset_cases, evenly_spaced
    from medseg.data.preprocess import prepare_image

    return [prepare_image(plane(load_image(case)), size)[0].numpy()
            for name in SETS for case in evenly_spaced(dataset_cases(data / name, split), per_set)]


def quantise(src: Path, folder: Path, calibration: list[np.ndarray]) -> dict[str, Path]:
    """The fp32 encoder quantised three ways; returns {variant: path}."""
    import logging

    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"image": x}

    logging.getLogger().setLevel(logging.ERROR)
    out = {"dynamic (MatMul/Gemm; medseg's int8)": folder / "dynamic.onnx",
           "static, every op, min-max": folder / "static_all.onnx",
           "static, convolutions only, percentile": folder / "static_conv.onnx"}
    paths = list(out.values())
    q.quantize_dynamic(str(src), str(paths[0]), weight_type=q.QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    common = dict(quant_format=q.QuantFormat.QDQ, per_channel=True, activation_type=q.QuantType.QUInt8,
                  weight_type=q.QuantType.QInt8)
    q.quantize_static(str(src), str(paths[1]), Reader(), calibrate_method=q.CalibrationMethod.MinMax, **common)
    q.quantize_static(str(src), str(paths[2]), Reader(), calibrate_method=q.CalibrationMethod.Percentile,
                      op_types_to_quantize=["Conv"], **common)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="litemedsam", choices=("litemedsam", "hr-small"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--calibration", type=int, default=3, help="train images per set for calibration")
    parser.add_argument("--quick", action="store_true", help="1 calibration and 1 test image per set")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    require_data(args.data)
    import onnxruntime as ort
    import torch

    torch.set_num_threads(THREADS)
    from medseg.engines import export_model
    from medseg.models import build_model

    start = time.perf_counter()
    model = build_model(args.model, pretrained=True)
    size = model.image_size
    calibration = images(args.data, "train", 1 if args.quick else args.calibration, size)
    test = images(args.data, "test", 1 if args.quick else 2, size)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_model(model, tmp / "fp32", args.model, "fp32")
        src = tmp / "fp32" / "encoder.onnx"
        variants = {"fp32 (reference)": src, **quantise(src, tmp, calibration)}
        sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                    for k, p in variants.items()}
        reference = [sessions["fp32 (reference)"].run(["embedding"], {"image": x})[0] for x in test]
        for name, session in sessions.items():
            errors = [float(np.linalg.norm(session.run(["embedding"], {"image": x})[0] - ref) / np.linalg.norm(ref))
                      for x, ref in zip(test, reference)]
            ms = 1e3 * median_seconds(lambda: session.run(["embedding"], {"image": test[0]}), 5)
            rows.append({"variant": name, "encoder_ms": round(ms, 1), "relative_error_mean": round(float(np.mean(errors)), 4),
                         "relative_error_max": round(float(np.max(errors)), 4)})
            print(f"{name:<40} encoder {ms:7.1f} ms   embedding relative error mean {np.mean(errors):.3f}, "
                  f"max {np.max(errors):.3f}")
    result = {"model": args.model, "threads": THREADS, "quick": args.quick, "calibration_images": len(calibration),
              "test_images": len(test), "rows": rows, "seconds": round(time.perf_counter() - start, 1)}
    out = args.json or REPO / "benchmarks" / "results" / f"int8_static{'_quick' if args.quick else ''}.json"
    print(f"wrote {write_json(result, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
