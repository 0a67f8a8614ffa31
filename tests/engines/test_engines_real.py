"""The engines on the real weights and real images: masks agree with torch fp32 (mean Dice >= 0.985,
each mask above the bound measured for its precision; one test case of every 2D set, box prompts as
`medseg evaluate` gives them)."""

from __future__ import annotations

import pytest

from medseg.data.cases import load_case, plane
from medseg.data.datasets import dataset_cases, evenly_spaced
from medseg.data.masks import MIN_SIZE, class_masks, dice
from medseg.eval.evaluate import SliceSegmenter
from medseg.infer import Predictor
from medseg.models import build_model

TORCH_THREADS = 2
SETS = ["kvasir_seg", "ph2_derm", "dsb2018_nuclei", "busi", "drishti_gs1_odoc", "isbi2012_em"]


def _masks(predictor: Predictor, cases) -> list:
    out = []
    for case in cases:
        image, label = load_case(case)
        segment = SliceSegmenter(predictor, plane(image), "box", MIN_SIZE)
        out += [segment(gt)[0] for _, gt in class_masks(label.array[0], case.mask_path)]
    return out


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("name, variants", [
    # (engine, precision, lowest agreement of any mask). fp16 storage computes in fp32: >= 0.99 everywhere.
    # bf16 and int8 move boundary pixels; `python benchmarks/engines.py --quick` (3 cases per set,
    # benchmarks/results/engines_quick_rows.txt) measured the lowest agreement at 0.964 for LiteMedSAM on
    # OpenVINO bf16 (the fundus cup/disc) and 0.987 for HR-small int8 (isbi's membranes). LiteMedSAM
    # int8 (dynamic) is not held here: 0.853 on the membranes.
    # (one variant per model here, for the suite's time)
    ("litemedsam", [("openvino", "bf16", 0.96)]),
    ("hr-small", [("onnxruntime", "int8", 0.98)]),
])
def test_engines_agree_with_torch_fp32_on_real_images(shared_data, real_weights, name, variants):
    cases = [c for s in SETS for c in evenly_spaced(dataset_cases(shared_data / s, "test"), 1)]
    model = build_model(name, pretrained=True)
    reference = _masks(Predictor(model, device="cpu"), cases)
    for engine, precision, lowest in variants:
        got = _masks(Predictor(model, engine=engine, precision=precision), cases)
        scores = [dice(a, b) for a, b in zip(reference, got)]
        assert min(scores) >= lowest and sum(scores) / len(scores) >= 0.985, (engine, precision,
                                                                              [round(x, 4) for x in scores])
