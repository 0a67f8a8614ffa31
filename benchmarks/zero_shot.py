"""Zero-shot accuracy, latency and memory of pretrained LiteMedSAM (medseg's implementation).

Per dataset of ../shared/data (test split; every case where a set has no split): box-prompt and
point-prompt Dice, and box-prompt HD95 and NSD, with one prompt per ground-truth connected
component (per class), the union scored against the whole mask. 3D: la_heart_mri volumes,
segmented slice by slice from one 3D box per component (HD95/NSD in mm). Latency: encoder and
decoder separately, median of several runs, 2 threads. Peak memory: one box prediction in a
fresh process (/usr/bin/time -v).

    python benchmarks/zero_shot.py [--quick] [--json OUT]

``--quick`` takes 3 evenly spaced test cases per 2D set and skips 3D (about 2 minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO, median_seconds, peak_rss_mb, require_data, set_threads, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from medseg.data.datasets import dataset_cases, evenly_spaced  # noqa: E402
from medseg.eval.evaluate import evaluate_case  # noqa: E402
from medseg.infer import Predictor  # noqa: E402
from medseg.models import build_model  # noqa: E402

SETS_2D = ["kvasir_seg", "ph2_derm", "dsb2018_nuclei", "busi", "drishti_gs1_odoc", "isbi2012_em",
           "ct_organ_slices_demo", "ham10000_mini"]
SETS_3D = ["la_heart_mri"]


class EmbeddingCache:
    """Wraps a Predictor so that the box and point runs of one image share one encoding."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.key: str | None = None

    def set_image(self, image: np.ndarray, modality: str | None = None) -> None:
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape) + str(modality)
        if key != self.key:
            self.predictor.set_image(image, modality)
            self.key = key

    def predict(self, **kwargs):
        return self.predictor.predict(**kwargs)


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None and np.isfinite(r[key])]
    return float(np.mean(values)) if values else None


def evaluate_set(predictor, folder: Path, prompts: tuple[str, ...], limit: int | None) -> dict:
    split = "test" if (folder / "splits.json").is_file() else "all"
    cases = evenly_spaced(dataset_cases(folder, split), limit)
    rows = {p: [] for p in prompts}
    errors = []
    for case in tqdm(cases, desc=folder.name, unit="case", leave=False):
        for prompt in prompts:
            try:
                rows[prompt].extend(evaluate_case(predictor, case, prompt=prompt)[0])
            except Exception as exc:  # noqa: BLE001 - a bad case is reported, the rest scored
                errors.append(f"{case.stem} ({prompt}): {exc}")
    box = rows["box"]
    return {"box_dice": _mean(box, "dice"), "point_dice": _mean(rows["point"], "dice") if "point" in rows else None,
            "hd95": _mean(box, "hd95"), "nsd": _mean(box, "nsd"), "n": len({r["stem"] for r in box}),
            "split": split, "errors": errors}


def latency(model) -> dict:
    x = torch.rand(1, 3, model.image_size, model.image_size)
    box = torch.tensor([[40.0, 50.0, 160.0, 190.0]])
    with torch.no_grad():
        embedding = model.encode(x)
        enc = median_seconds(lambda: model.encode(x), runs=5)
        dec = median_seconds(lambda: model.decode(embedding, boxes=box), runs=20, warmup=3)
    return {"encoder_ms": enc * 1e3, "decoder_ms": dec * 1e3}


PEAK_PROBE = """
import numpy as np, torch
torch.set_num_threads(2)
from medseg.models import build_model
from medseg.infer import Predictor
p = Predictor(build_model("litemedsam", pretrained=True, weights="published"), device="cpu")
p.set_image((np.random.default_rng(0).random((1024, 1024, 3)) * 255).astype(np.uint8))
p.predict(box=[100, 100, 600, 700])
"""


def print_table(result: dict) -> None:
    def f(v, spec=".3f"):
        return "   -  " if v is None else format(v, spec)

    print(f"\n{'dataset':<22}{'n':>4}  {'box Dice':>8}  {'point Dice':>10}  {'HD95':>7}  {'NSD':>6}")
    for name, r in result["datasets"].items():
        print(f"{name:<22}{r['n']:>4}  {f(r['box_dice']):>8}  {f(r['point_dice']):>10}  "
              f"{f(r['hd95'], '.1f'):>7}  {f(r['nsd']):>6}")
    lat = result["latency"]
    print(f"\nlatency (CPU, {result['threads']} threads, median): encoder {lat['encoder_ms']:.0f} ms, "
          f"decoder {lat['decoder_ms']:.1f} ms per prompt set; peak memory {f(result['peak_mb'], '.0f')} MB "
          f"(one 1024x1024 image, fresh process)")


def remeasure_latency(path: Path) -> int:
    import json

    set_threads()
    result = json.loads(path.read_text())
    result["latency"] = latency(build_model("litemedsam", pretrained=True, weights="published"))
    result["peak_mb"] = peak_rss_mb(PEAK_PROBE)
    result["threads"] = torch.get_num_threads()
    print_table(result)
    print(f"\nupdated latency and peak memory in {write_json(result, path)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 cases per 2D set, no 3D (about 2 minutes)")
    parser.add_argument("--json", type=Path, help="output JSON (default benchmarks/results/zero_shot[_quick].json)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--limit", type=int, help="cases per set (default: all; 3 with --quick)")
    parser.add_argument("--latency-only", action="store_true",
                        help="re-measure latency and peak memory into an existing --json (e.g. on a quieter machine)")
    args = parser.parse_args(argv)
    if args.latency_only:
        return remeasure_latency(args.json or REPO / "benchmarks" / "results" / "zero_shot.json")
    require_data(args.data)
    set_threads()
    start = time.time()
    limit = args.limit or (3 if args.quick else None)
    model = build_model("litemedsam", pretrained=True, weights="published")
    predictor = EmbeddingCache(Predictor(model, device="cpu"))
    datasets = {}
    for name in SETS_2D:
        datasets[name] = evaluate_set(predictor, args.data / name, ("box", "point"), limit)
    if not args.quick:
        for name in SETS_3D:
            datasets[name] = evaluate_set(predictor.predictor, args.data / name, ("box",), limit)
    result = {"datasets": datasets, "latency": latency(model), "peak_mb": peak_rss_mb(PEAK_PROBE),
              "threads": torch.get_num_threads(), "quick": args.quick, "seconds": round(time.time() - start, 1),
              "torch": torch.__version__}
    print_table(result)
    for name, r in datasets.items():
        for e in r["errors"]:
            print(f"  {name}: {e}", file=sys.stderr)
    out = args.json or REPO / "benchmarks" / "results" / f"zero_shot{'_quick' if args.quick else ''}.json"
    print(f"\nwrote {write_json(result, out)} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
