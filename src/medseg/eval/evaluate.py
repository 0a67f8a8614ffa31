"""Evaluate a promptable predictor on a dataset folder with prompts derived from the ground truth.

Per case and per foreground class of its mask:
    * one prompt (box or click, see :mod:`medseg.data.prompts`) per connected component of at
      least ``min_size`` pixels, all of them predicted in ONE batched ``predictor.predict`` call;
    * the union of the predicted masks is scored against the class's whole mask
      (:func:`medseg.eval.metrics.case_metrics`);
    * a class with pixels but no component large enough gets an empty prediction;
    * a mask without any foreground gets no prompt, an empty prediction and ``empty_gt=True``.
Binary masks stored as 0/255 are class 1; other mask values are class ids.

The predictor needs ``set_image(image)`` with image (H, W) or (H, W, C), and
``predict(box=(N, 4) | None, points=(N, K, 2) | None, point_labels=(N, K) | None,
multimask=False)`` returning an object whose ``masks`` is bool (N, M, H, W) and ``scores``
is (N, M). Boxes are (x0, y0, x1, y1), inclusive pixels; points are (x, y).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medseg.errors import InputError, MedsegError
from medseg.infer.volume import segment_volume
from medseg.io import Image, Label
from medseg.data.cases import Case, load_case, plane
from medseg.data.datasets import class_names, evaluation_cases
from medseg.data.masks import MIN_SIZE, class_masks
from medseg.data.prompts import boxes3d_from_mask, boxes_from_mask, points_from_mask
from medseg.eval.metrics import NSD_TOLERANCE, case_metrics
from medseg.eval.report import Overlay, Report

Loader = Callable[[Case], tuple[Image, Label]]
PROMPTS = ("box", "point")
EMPTY_NAME = "(no foreground)"


def _empty_class(names: dict[int, str]) -> int | None:
    """Class an all-background mask is reported under: the only foreground class, else None."""
    foreground = sorted(k for k in names if k != 0)
    if not foreground:
        return 1
    return foreground[0] if len(foreground) == 1 else None


def class_name(class_id: int | None, names: dict[int, str]) -> str:
    """Name of a class id; class 1 of a 0/255 mask may be named under 255."""
    if class_id is None:
        return EMPTY_NAME
    if class_id == 1 and 1 not in names and 255 in names:
        return names[255]
    return names.get(class_id, f"class_{class_id}")


def _union(out: object, n: int, shape: tuple[int, int]) -> np.ndarray:
    """Union over objects of the predicted masks (N, M, H, W) -> bool (H, W).

    With M > 1 the mask of highest predicted IoU (``out.scores``) of each object is used.
    """
    masks = np.asarray(out.masks)
    if masks.ndim != 4 or masks.shape[0] != n or masks.shape[2:] != shape:
        expected = f"({n}, M, {shape[0]}, {shape[1]})"
        raise MedsegError(f"predictor returned masks of shape {masks.shape}, expected {expected}")
    best = np.zeros(n, dtype=int)
    if masks.shape[1] > 1:
        best = np.asarray(out.scores).reshape(n, masks.shape[1]).argmax(axis=1)
    return masks[np.arange(n), best].astype(bool).any(axis=0)


def _prompt_kwargs(gt: np.ndarray, prompt: str, min_size: int) -> tuple[int, dict]:
    """(number of objects, keyword arguments of predictor.predict) for a bool (H, W) class mask."""
    if prompt == "box":
        boxes = boxes_from_mask(gt, min_size)
        return len(boxes), {"box": boxes, "multimask": False}
    points = points_from_mask(gt, min_size)  # (N, 2)
    labels = np.ones((len(points), 1), dtype=np.int64)
    return len(points), {"points": points[:, None, :], "point_labels": labels, "multimask": True}  # a lone click: best of 3


class SliceSegmenter:
    """Segments the objects of one class of a 2D case; encodes the image once, on first use."""

    def __init__(self, predictor: object, image: np.ndarray, prompt: str, min_size: int) -> None:
        self.predictor, self.image, self.prompt, self.min_size = predictor, image, prompt, min_size
        self.encoded = False

    def __call__(self, gt: np.ndarray) -> tuple[np.ndarray, int]:
        n, kwargs = _prompt_kwargs(gt, self.prompt, self.min_size)
        if not n:
            return np.zeros(gt.shape, dtype=bool), 0
        if not self.encoded:
            self.predictor.set_image(self.image)
            self.encoded = True
        return _union(self.predictor.predict(**kwargs), n, gt.shape), n


class _VolumeSegmenter:
    """Segments the objects of one class of a 3D case slice by slice, one 3D box per component."""

    def __init__(self, predictor: object, image: Image, min_size: int) -> None:
        if image.array.shape[0] != 1:
            raise InputError(f"{image.meta.source}: 3D evaluation takes one-channel volumes, "
                             f"got {image.array.shape[0]} channels")
        self.predictor, self.volume, self.min_size = predictor, image.array[0], min_size
        self.modality = image.meta.modality

    def __call__(self, gt: np.ndarray) -> tuple[np.ndarray, int]:
        boxes = boxes3d_from_mask(gt, self.min_size)
        pred = np.zeros(gt.shape, dtype=bool)
        for box in boxes:
            pred |= segment_volume(self.predictor, self.volume, box, modality=self.modality, progress=False) > 0
        return pred, len(boxes)


def _middle_slice(gt: np.ndarray) -> int:
    """Index of the slice in the middle of a (Z, Y, X) mask's extent (the volume's middle if empty)."""
    zs = np.flatnonzero(gt.any(axis=(1, 2)))
    return int((zs[0] + zs[-1]) // 2) if len(zs) else gt.shape[0] // 2


def evaluate_case(
    predictor: object,
    case: Case,
    loader: Loader = load_case,
    prompt: str = "box",
    names: dict[int, str] | None = None,
    min_size: int = MIN_SIZE,
    tolerance: float = NSD_TOLERANCE,
) -> tuple[list[dict], dict[int | None, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Score one 2D or 3D case; returns (report rows, {class_id: (image, gt, pred)}), where the
    arrays are (H, W[, C]) / (H, W) planes (for a volume: the middle slice of the class).

    A 3D case (Z > 1) is segmented slice by slice from one 3D box per component (box prompts
    only); its HD95 and NSD are in mm. Exceptions propagate; :func:`evaluate_dataset` records them.
    """
    names = names or {}
    image, label = loader(case)
    volumetric = image.array.shape[1] > 1
    if volumetric and prompt != "box":
        raise InputError(f"{case.image_path}: 3D cases are evaluated with --prompt box only")
    mask = label.array if volumetric else label.array[0]
    segment = (_VolumeSegmenter(predictor, image, min_size) if volumetric
               else SliceSegmenter(predictor, plane(image), prompt, min_size))
    spacing = image.meta.spacing if volumetric else None
    classes = class_masks(mask, case.mask_path, names)
    empty_gt = not classes
    if empty_gt:
        classes = [(_empty_class(names), np.zeros(mask.shape, dtype=bool))]
    seconds, results, arrays = 0.0, [], {}
    for class_id, gt in classes:
        start = time.perf_counter()
        pred, n = segment(gt)
        seconds += time.perf_counter() - start
        row = {"stem": case.stem, "class_id": class_id, "class_name": class_name(class_id, names)}
        row.update(case_metrics(pred, gt, spacing=spacing, tolerance=tolerance))
        row.update({"n_prompts": n, "empty_gt": empty_gt})
        results.append(row)
        if volumetric:
            z = _middle_slice(gt)
            arrays[class_id] = (image.array[0, z], gt[z], pred[z])
        else:
            arrays[class_id] = (segment.image, gt, pred)
    for row in results:
        row["seconds"] = seconds
    return results, arrays


def _pick_overlays(rows: list[dict]) -> list[tuple[str, dict]]:
    """(label, row) of the best, median and worst rows by Dice, preferring non-empty ground truth."""
    pool = [r for r in rows if not r["empty_gt"]] or list(rows)
    if not pool:
        return []
    ranked = sorted(pool, key=lambda r: r["dice"], reverse=True)
    best, median, worst = ranked[0], ranked[len(ranked) // 2], ranked[-1]
    picks = [("best", best)]
    if median is not best and median is not worst:
        picks.append(("median", median))
    if worst is not best:
        picks.append(("worst", worst))
    return picks


def _keep_overlays(report: Report, predictor: object, by_stem: dict[str, Case], **options) -> None:
    """Re-run the best, median and worst cases to keep their image / gt / prediction for figures.

    Only these few cases are held in memory; a failure here only drops that overlay.
    """
    for label, row in _pick_overlays(report.cases):
        try:
            _, arrays = evaluate_case(predictor, by_stem[row["stem"]], **options)
            image, gt, pred = arrays[row["class_id"]]
        except Exception as exc:  # noqa: BLE001 - an overlay is optional
            print(f"overlay of {row['stem']} skipped: {exc}", file=sys.stderr)
            continue
        title = f"{label}: {row['stem']} ({row['class_name']})"
        report.overlays.append(Overlay(title=title, dice=row["dice"], image=image, gt=gt, pred=pred))


def evaluate_dataset(
    predictor: object,
    dataset_dir: str | Path,
    split: str = "test",
    prompt: str = "box",
    limit: int | None = None,
    progress: bool = True,
    loader: Loader = load_case,
    *,
    min_size: int = MIN_SIZE,
    tolerance: float = NSD_TOLERANCE,
    overlays: bool = True,
) -> Report:
    """Evaluate ``predictor`` on the cases of ``split`` of ``dataset_dir``.

    Args:
        predictor: see the module docstring.
        dataset_dir: a dataset folder (see :mod:`medseg.data.datasets`).
        split: a split of ``splits.json`` or ``"all"``.
        prompt: ``"box"`` (tight box per component) or ``"point"`` (one positive click per
            component at its deepest interior pixel).
        limit: evaluate only the first ``limit`` cases.
        progress: show a tqdm progress bar.
        loader: ``loader(case) -> (Image, Label)``; default :func:`medseg.data.cases.load_case`.
        min_size: components smaller than this (pixels) get no prompt.
        tolerance: NSD tolerance in pixels.
        overlays: keep the best, median and worst case (re-predicted at the end) for figures.

    Returns:
        a :class:`Report`. Cases that fail (unreadable file, size mismatch, predictor error)
        are listed in ``report.errors`` and printed to stderr at the end; the others are scored.
    """
    if prompt not in PROMPTS:
        raise InputError(f"prompt must be one of {', '.join(PROMPTS)}, got {prompt!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")
    cases, missing = evaluation_cases(dataset_dir, split, limit)
    options = {"loader": loader, "prompt": prompt, "names": class_names(dataset_dir),
               "min_size": min_size, "tolerance": tolerance}
    report = Report(dataset=str(Path(dataset_dir)), split=split, prompt=prompt)
    report.errors += [{"stem": stem, "message": what} for stem, what in missing.items()]
    for case in tqdm(cases, desc=f"evaluate {split}", unit="case", disable=not progress):
        try:
            rows, _ = evaluate_case(predictor, case, **options)
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the evaluation
            message = str(exc) if isinstance(exc, MedsegError) else f"{type(exc).__name__}: {exc}"
            report.errors.append({"stem": case.stem, "message": message})
            continue
        report.cases.extend(rows)
    if overlays:
        _keep_overlays(report, predictor, {c.stem: c for c in cases}, **options)
    if report.errors:
        print(f"{len(report.errors)} of {len(cases) + len(missing)} cases could not be evaluated:", file=sys.stderr)
        for error in report.errors:
            print(f"  {error['stem']}: {error['message']}", file=sys.stderr)
    return report
