"""Which classes of a planned 3D model should keep only their largest connected component, decided on val.

nnU-Net's post-processing idea, written here: a structure that is one object in every volume (an atrium,
a ventricle, a hippocampus) gains nothing from the model's stray islands, but a class that comes in
several pieces loses when all but one are dropped. So each class is tried both ways on the validation
split (never test): raw arg-max labels against labels with only that class's largest component kept,
and the component rule is adopted for the classes where the mean Dice does not drop.

    decision = decide_keep_largest(model, "../shared/data/la_heart_mri")  # {"keep_largest": [1], ...}
    model.set_plan(dataclasses.replace(model.plan, keep_largest=decision["keep_largest"]))

``medseg postprocess DATASET --model M [--checkpoint W] --out W2`` does both and writes the weights.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from medseg.data.cases import load_image
from medseg.data.datasets import evaluation_cases
from medseg.data.masks import dice, keep_largest
from medseg.errors import InputError
from medseg.io import read_label


def decide_keep_largest(model, dataset_dir, split: str = "val", limit: int | None = None,
                        progress: bool = True) -> dict:
    """Per class of ``model``'s plan, the mean Dice on ``split`` with its raw labels and with only its largest
    component, and the decision.

    Returns ``{"split", "cases": [stems], "classes": {class id: {"raw", "largest", "keep"}}, "keep_largest":
    [class ids]}``; InputError when the model has no plan or the split has no readable case."""
    from medseg.infer.sliding import segment_volume_auto

    plan = getattr(model, "plan", None)
    if plan is None:
        raise InputError("this model carries no 3D plan: give a shipped 3D model (`medseg models`) or the "
                         "--checkpoint of a 'volume' run")
    cases, _ = evaluation_cases(dataset_dir, split, limit)
    if not cases:
        raise InputError(f"{dataset_dir}: no {split!r} cases with masks to decide the post-processing on")
    raw: dict[int, list[float]] = {c: [] for c in plan.classes}
    largest: dict[int, list[float]] = {c: [] for c in plan.classes}
    for case in tqdm(cases, desc=f"post-processing on {split}", unit="volume", disable=not progress):
        labels = segment_volume_auto(model, load_image(case), postprocess=False)
        truth = read_label(case.mask_path).array  # (Z, Y, X) class ids
        if truth.shape != labels.shape:
            raise InputError(f"{case.mask_path}: mask of shape {truth.shape}, volume of {labels.shape}")
        for class_id in plan.classes:
            raw[class_id].append(dice(labels == class_id, truth == class_id))
            largest[class_id].append(dice(keep_largest(labels, [class_id]) == class_id, truth == class_id))
    classes = {c: {"raw": float(np.mean(raw[c])), "largest": float(np.mean(largest[c]))} for c in plan.classes}
    for entry in classes.values():
        entry["keep"] = entry["largest"] >= entry["raw"]
    return {"split": split, "cases": [c.stem for c in cases], "classes": classes,
            "keep_largest": [c for c, entry in classes.items() if entry["keep"]]}
