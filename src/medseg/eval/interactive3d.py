"""Interactive evaluation in volumes: Dice after each round of simulated 3D clicks.

Per 3D case and per foreground class (the class's whole mask is the object): the volume is set once
(``predictor.set_volume``); round 1 is one click at the class's deepest voxel (``first="point"``) or its
3D box (``first="box"``, kept in every round); each later round adds one click at the deepest voxel of
the largest 3D error region (:func:`~medseg.data.prompt_sim3d.sample_click_3d`, depths in mm), with the
previous round's logits as ``mask_input``. After each round the prediction is scored against the class
mask: Dice per round, its area under the rounds curve (the mean of the trapezoids between rounds, as the
CVPR 2025 interactive challenge scores), and the final round's NSD (``metrics.NSD_TOLERANCE`` mm) and HD95 in mm.

``predictor``: ``set_volume(volume (Z, Y, X), spacing_zyx, modality)`` and ``predict(points (K, 3) x y z,
point_labels, box (6,), mask_input) -> .mask, .logits``: :class:`~medseg.infer.volume_prompts.VolumePredictor`
or :class:`~medseg.infer.volume_prompts.SliceWisePredictor` (the 2D model slice by slice).
"""

from __future__ import annotations

import numpy as np

from medseg.data.cases import Case, load_case
from medseg.data.masks import class_masks, dice
from medseg.data.prompt_sim3d import box_3d, sample_click_3d
from medseg.errors import InputError
from medseg.eval.evaluate import class_name
from medseg.eval.metrics import NSD_TOLERANCE, case_metrics


def rounds_auc(values: list[float]) -> float:
    """Area under a Dice-per-round curve, normalised to 0..1 (the mean of the trapezoids; one round: its value)."""
    v = np.asarray(values, dtype=float)
    return float(v[0]) if len(v) == 1 else float(((v[1:] + v[:-1]) / 2).mean())


def interact_volume(predictor: object, case: Case, rounds: int, first: str = "point", loader=load_case,
                    names: dict[int, str] | None = None) -> list[dict]:
    """Rows ``{"stem", "class_id", "class_name", "n_objects": 1, "dice_per_round", "auc", "nsd", "hd95"}`` of
    one 3D case, one per foreground class ([] when the label map is empty). Exceptions propagate."""
    image, label = loader(case)
    if image.array.shape[1] < 2:
        raise InputError(f"{case.image_path}: a 2D picture; 3D interactive evaluation needs volumes")
    if image.array.shape[0] != 1:
        raise InputError(f"{case.image_path}: {image.array.shape[0]} channels; give one-channel volumes")
    spacing = tuple(float(s) for s in image.meta.spacing)
    predictor.set_volume(image.array[0], spacing, image.meta.modality)
    rows = []
    for class_id, gt in class_masks(label.array, case.mask_path, names or {}):
        box = None
        points: list[list[float]] = []
        labels: list[int] = []
        if first == "box":
            z0, y0, x0, z1, y1, x1 = box_3d(gt).tolist()
            box = [x0, y0, z0, x1, y1, z1]
        pred, logits, scores = None, None, []
        for r in range(rounds):
            if first == "point" or r > 0:
                click = sample_click_3d(gt, pred, spacing)
                if click is not None:
                    points.append([click[2], click[1], click[0]])
                    labels.append(click[3])
            out = predictor.predict(points=points or None, point_labels=labels or None, box=box, mask_input=logits)
            pred, logits = out.mask, out.logits
            scores.append(dice(pred, gt))
        final = case_metrics(pred, gt, spacing, NSD_TOLERANCE)
        rows.append({"stem": case.stem, "class_id": class_id, "class_name": class_name(class_id, names or {}),
                     "n_objects": 1, "dice_per_round": scores, "auc": rounds_auc(scores), "nsd": final["nsd"],
                     "hd95": final["hd95"]})
    return rows
