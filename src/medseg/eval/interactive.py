"""Interactive evaluation: Dice after each round of simulated corrective clicks.

Per 2D case and per foreground class (``medseg.data.masks.class_masks``): every connected
component of at least ``min_size`` pixels (``medseg.data.masks.components``) is one object,
segmented on its own by :func:`medseg.data.prompt_sim.simulate_objects` (round 1: a box or a
click; each later round: one more click into the largest error, with the previous logits as
``mask_input``). After each round the union of the objects' masks is scored against the class's
whole mask; a class with no component large enough scores an empty prediction. Cases without any
foreground are listed under ``skipped``; cases that fail (unreadable, 3D, predictor error) under
``errors``; the rest are scored. Rounds are numbered from 1 in tables and figures.

With a volume predictor (``set_volume``, e.g. a promptable 3D model) the cases are volumes and each
class is prompted in 3D (:func:`medseg.eval.interactive3d.interact_volume`); its rows add the final
round's NSD and HD95 in mm. A 2D predictor on a dataset of volumes runs the same 3D protocol slice by
slice (:class:`medseg.infer.volume_prompts.SliceWisePredictor`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from medseg.data.masks import dice
from medseg.data.prompt_sim import FIRST_PROMPTS, simulate_objects
from medseg.errors import InputError, MedsegError
from medseg.data.cases import Case, load_case, plane_2d
from medseg.data.datasets import class_names, evaluation_cases
from medseg.data.masks import MIN_SIZE, class_masks, components
from medseg.eval.evaluate import Loader, class_name
from medseg.eval.interactive3d import interact_volume, rounds_auc


def interact_case(predictor: object, case: Case, rounds: int, first: str = "point", loader: Loader = load_case,
                  names: dict[int, str] | None = None, min_size: int = MIN_SIZE) -> list[dict]:
    """Rows ``{"stem", "class_id", "class_name", "n_objects", "dice_per_round"}`` of one 2D case,
    one per foreground class ([] when the mask is empty). Exceptions propagate."""
    image, label = loader(case)
    picture, mask, encoded, rows = plane_2d(image, "interactive evaluation"), label.array[0], False, []
    for class_id, gt in class_masks(mask, case.mask_path, names or {}):
        labels, kept = components(gt, min_size)
        union = [np.zeros(gt.shape, dtype=bool) for _ in range(rounds)]
        if kept:
            objects = [labels == component for component in kept]
            for history in simulate_objects(predictor, None if encoded else picture, objects, rounds, first):
                for r, (pred, _) in enumerate(history):
                    union[r] |= pred
            encoded = True
        rows.append({"stem": case.stem, "class_id": class_id, "class_name": class_name(class_id, names or {}),
                     "n_objects": len(kept), "dice_per_round": [dice(u, gt) for u in union]})
    return rows


def evaluate_interactive(predictor: object, dataset_dir: str | Path, split: str = "test", rounds: int = 5,
                         limit: int | None = None, progress: bool = True, *, first: str = "point",
                         loader: Loader = load_case, min_size: int = MIN_SIZE) -> dict:
    """Simulate ``rounds`` rounds of interaction on every 2D case of ``split``.

    Args:
        predictor: ``set_image`` / ``predict(box, points, point_labels, mask_input, multimask)``
            as :class:`medseg.infer.Predictor`.
        dataset_dir: a dataset folder (see :mod:`medseg.data.datasets`).
        split: a split of ``splits.json`` or ``"all"``.
        rounds: predictions per object (round 1 = the first prompt, then one click each).
        limit: evaluate only the first ``limit`` cases.
        progress: show a tqdm progress bar.
        first: first prompt, ``"point"`` (one click) or ``"box"`` (kept in every round).
        loader: ``loader(case) -> (Image, Label)``.
        min_size: components smaller than this (pixels) get no prompt.

    Returns:
        ``{"dataset", "split", "first", "rounds": K, "dice_per_round": [K means over rows, None
        without rows], "cases": [{"stem", "class_id", "class_name", "n_objects",
        "dice_per_round": [K floats in 0..1]}], "auc": mean area under the rows' Dice-per-round
        curves (:func:`~medseg.eval.interactive3d.rounds_auc`), "errors": [{"stem", "message"}], "skipped": [stems
        with no foreground]}``; plain Python values, ready for ``json.dump``.
    """
    if first not in FIRST_PROMPTS:
        raise InputError(f"first must be one of {', '.join(FIRST_PROMPTS)}, got {first!r}")
    if not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"rounds must be a positive integer, got {rounds!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")
    cases, missing = evaluation_cases(dataset_dir, split, limit)
    names = class_names(dataset_dir)
    result = {"dataset": str(Path(dataset_dir)), "split": split, "first": first, "rounds": rounds,
              "dice_per_round": [], "cases": [], "errors": [{"stem": k, "message": v} for k, v in missing.items()],
              "skipped": []}
    if not hasattr(predictor, "set_volume") and cases and _is_volume_case(cases[0]):
        from medseg.infer.volume_prompts import SliceWisePredictor

        predictor = SliceWisePredictor(predictor)  # a 2D model on volumes: slice by slice, same 3D protocol
    for case in tqdm(cases, desc=f"interactive {split}", unit="case", disable=not progress):
        try:
            if hasattr(predictor, "set_volume"):  # a volume predictor: 3D clicks (medseg.eval.interactive3d)
                rows = interact_volume(predictor, case, rounds, first, loader, names)
            else:
                rows = interact_case(predictor, case, rounds, first, loader, names, min_size)
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the evaluation
            message = str(exc) if isinstance(exc, MedsegError) else f"{type(exc).__name__}: {exc}"
            result["errors"].append({"stem": case.stem, "message": message})
            continue
        if not rows:
            result["skipped"].append(case.stem)
        result["cases"].extend(rows)
    per_round = np.array([row["dice_per_round"] for row in result["cases"]], dtype=float).reshape(-1, rounds)
    result["dice_per_round"] = [float(v) for v in per_round.mean(axis=0)] if len(per_round) else [None] * rounds
    result["auc"] = float(np.mean([rounds_auc(r) for r in per_round])) if len(per_round) else None
    if any("nsd" in row for row in result["cases"]):
        result["nsd"] = float(np.mean([row["nsd"] for row in result["cases"]]))
    if result["errors"]:
        print(f"{len(result['errors'])} of {len(cases) + len(missing)} cases could not be evaluated:", file=sys.stderr)
        for error in result["errors"]:
            print(f"  {error['stem']}: {error['message']}", file=sys.stderr)
    return result


def _is_volume_case(case: Case) -> bool:
    from medseg.formats import VOLUME_SUFFIXES

    return str(case.image_path).lower().endswith(VOLUME_SUFFIXES)


def _prompt_label(first: str, round_: int) -> str:
    """What the model was given in round ``round_`` (0-based): 'box + 2 clicks', '3 clicks'."""
    clicks = round_ + (first == "point")
    text = f"{clicks} click{'s' if clicks != 1 else ''}"
    return text if first == "point" else ("box" if clicks == 0 else f"box + {text}")


def print_rounds(result: dict, file: TextIO | None = None) -> None:
    """Print mean Dice per round of an :func:`evaluate_interactive` result as a text table."""
    out = file or sys.stdout
    first = result.get("first", "point")
    print(f"{result.get('dataset', '')} [{result.get('split', '')}] interactive, first prompt={first}", file=out)
    print(f"{'round':>5}  {'prompts':<16}{'dice':>6}", file=out)
    for r, value in enumerate(result["dice_per_round"]):
        shown = "   -  " if value is None or not math.isfinite(value) else f"{value:6.3f}"
        print(f"{r + 1:>5}  {_prompt_label(first, r):<16}{shown}", file=out)
    if result.get("auc") is not None:
        extra = f", final NSD {result['nsd']:.3f}" if result.get("nsd") is not None else ""
        print(f"area under the rounds curve {result['auc']:.3f}{extra}", file=out)
    stems = {row["stem"] for row in result["cases"]}
    print(f"{len(stems)} cases ({len(result['cases'])} class rows) scored, {len(result['errors'])} errors, "
          f"{len(result.get('skipped', []))} without foreground skipped", file=out)
    for error in result["errors"]:
        print(f"  error {error['stem']}: {error['message']}", file=out)


def rounds_csv(result: dict) -> str:
    """An :func:`evaluate_interactive` result as CSV text: stem, class_id, Dice after each round."""
    rows = ["stem,class_id," + ",".join(f"dice_round_{k + 1}" for k in range(result["rounds"]))]
    rows += [f"{c['stem']},{c['class_id']}," + ",".join("" if d is None else f"{d:.6f}" for d in c["dice_per_round"])
             for c in result["cases"]]
    return "\n".join(rows) + "\n"


def save_rounds_figure(result: dict, path: str | Path, overwrite: bool = False) -> Path:
    """Write a PNG of Dice against round: one thin line per row (up to 200), the mean in bold.

    By the output policy: never into the dataset's own files, an existing file only with ``overwrite``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only when a figure is wanted
    from matplotlib.figure import Figure

    from medseg.data.datasets import dataset_files
    from medseg.io.outputs import atomic_write, plan_outputs

    protected = dataset_files(result["dataset"]) if result.get("dataset") else []
    target = plan_outputs({"figure": path}, protected=protected, overwrite=overwrite)["figure"]
    x = np.arange(1, result["rounds"] + 1)
    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for row in result["cases"][:200]:
        ax.plot(x, row["dice_per_round"], color="0.75", linewidth=0.7)
    mean = [np.nan if v is None else v for v in result["dice_per_round"]]
    ax.plot(x, mean, color="#d62728", linewidth=2.5, marker="o", label=f"mean of {len(result['cases'])} rows")
    ax.set(xlabel="round (1 = first prompt, then one click each)", ylabel="Dice", ylim=(0, 1.02), xticks=x,
           title=f"{Path(result.get('dataset', '')).name} [{result.get('split', '')}] first={result.get('first')}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    figure.tight_layout()
    return atomic_write(target, lambda tmp: figure.savefig(tmp, format="png"))
