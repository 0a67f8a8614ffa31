"""Simulated user prompts: corrective clicks from errors, multi-round interaction.

Conventions (shared with :class:`medseg.infer.Predictor`):
    box   = (x0, y0, x1, y1), inclusive pixel coordinates of the image the masks live in;
    click = (x, y, label): pixel column x, row y, label 1 positive (add) / 0 negative (remove);
    masks are bool (H, W) (or (B, H, W) tensors for training), True = foreground.

Clicks follow SAM / RITM interactive protocols: the next click goes into the largest connected
error component (8-connectivity) of the previous prediction; false negatives give a positive click,
false positives a negative one (a tie goes to the positive click). Without ``rng`` the click sits
at the component's deepest pixel (farthest from its border, the image edge counting as border;
the evaluation protocol); with ``rng`` it is a uniformly random pixel among the component's pixels
at least half that depth from the border (training).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from medseg.errors import InputError
from medseg.data.masks import dice, largest_component
from medseg.data.prompts import deepest_point, is_lone_click, mask_box

FIRST_PROMPTS = ("box", "point")
PADDING_LABEL = -1
"""Label of a click that is not there (the prompt encoder ignores it)."""


def _generator(rng) -> np.random.Generator | None:
    return None if rng is None else np.random.default_rng(rng)


def _click_in(component: np.ndarray, rng: np.random.Generator | None) -> tuple[int, int]:
    """(x, y) inside a bool (H, W) component: its deepest pixel, or a random fairly deep one."""
    ys, xs = ndimage.find_objects(component.astype(np.uint8))[0]
    crop = component[ys, xs]
    if rng is None:
        y, x = deepest_point(crop)
    else:
        depth = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
        candidates = np.argwhere(depth >= depth.max() / 2)  # (K, 2) rows of (y, x), all inside
        y, x = candidates[rng.integers(len(candidates))]
    return int(xs.start + x), int(ys.start + y)


def sample_click(gt: np.ndarray, pred: np.ndarray | None,
                 rng: np.random.Generator | int | None = None) -> tuple[int, int, int] | None:
    """Next corrective click ``(x, y, label)`` for ``pred`` against ``gt`` (see the module docstring).

    Args:
        gt: (H, W) ground truth, non-zero = object.
        pred: (H, W) previous prediction (non-zero = foreground), or None for the first click:
            a positive click at the ground truth's deepest pixel (random interior pixel with rng).
        rng: None for the deterministic evaluation protocol, a Generator (or seed) for training.

    Returns:
        (x, y, label) with label 1 (false negative: add) or 0 (false positive: remove), or None
        when ``pred`` equals ``gt`` (nothing to correct).

    Raises:
        InputError: shapes differ, or ``pred`` is None and ``gt`` is empty.
    """
    gt, rng = np.asarray(gt) != 0, _generator(rng)
    if gt.ndim != 2:
        raise InputError(f"gt must be a (H, W) mask, got shape {gt.shape}")
    if pred is None:
        if not gt.any():
            raise InputError("the ground truth is empty: there is nothing to click on")
        return (*_click_in(gt, rng), 1)
    found = error_region(gt, pred)
    return None if found is None else (*_click_in(found[0], rng), found[1])


def error_region(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The largest connected error of ``pred`` against ``gt`` (bool, same (H, W) or (Z, Y, X) shape) and its
    click label: ``(region, 1)`` for missed object (a false negative), ``(region, 0)`` for a false alarm
    (a tie goes to the miss); None when they agree. InputError when the shapes differ."""
    pred = np.asarray(pred) != 0
    if pred.shape != gt.shape:
        raise InputError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    fn, fp = largest_component(gt & ~pred), largest_component(pred & ~gt)
    fn_size, fp_size = (0 if c is None else int(c.sum()) for c in (fn, fp))
    if fn_size == 0 and fp_size == 0:
        return None
    return (fn, 1) if fn_size >= fp_size else (fp, 0)


def simulate_interaction(predictor: object, image: np.ndarray | None, gt: np.ndarray, rounds: int = 5,
                         first: str = "box", rng: np.random.Generator | int | None = None,
                         ) -> list[tuple[np.ndarray, float]]:
    """Segment one object over ``rounds`` rounds of simulated corrections: :func:`simulate_objects`
    of ``[gt]``; one ``(pred (H, W) bool, dice)`` per round."""
    return simulate_objects(predictor, image, [gt], rounds, first, rng)[0]


def simulate_objects(predictor: object, image: np.ndarray | None, gts: list[np.ndarray], rounds: int = 5,
                     first: str = "box", rng: np.random.Generator | int | None = None,
                     ) -> list[list[tuple[np.ndarray, float]]]:
    """Segment several objects of one image over ``rounds`` rounds of simulated corrections, each
    object on its own, all objects of a round in one batched ``predict`` call.

    Round 0 prompts each object's tight box (``first="box"``) or one positive click at its deepest
    pixel (``first="point"``). Each later round adds one click from the object's errors of the
    previous round (:func:`sample_click`), prompts all its clicks so far (plus the box when
    ``first="box"``) and passes its previous low-resolution logits ``Prediction.logits[:, :1]`` as
    ``mask_input``. A lone first click (``first="point"``, round 0) asks for the 3 multimask candidates
    and keeps the best scored (:func:`medseg.data.prompts.is_lone_click`, SAM's rule); every other round
    asks for one mask. An object with nothing left to correct repeats its previous result from then on
    (its prediction no longer changes), so the objects still clicked all hold the same number of clicks.

    Args:
        predictor: ``set_image(image)`` and ``predict(box=(N, 4), points=(N, K, 2) xy,
            point_labels=(N, K), mask_input=(N, 1, S, S), multimask)`` returning
            ``masks`` (N, M, H, W) bool, ``scores`` (N, M), ``logits`` (N, M, S, S).
        image: (H, W) or (H, W, C) image to encode, or None when ``set_image`` was already called.
        gts: (H, W) masks, ONE object each, non-zero = object (none empty).
        rounds: number of predictions (>= 1).
        first: ``"box"`` or ``"point"``.
        rng: None for deterministic clicks, a Generator (or seed) for random ones.

    Returns:
        per object, one ``(pred (H, W) bool, dice)`` per round.
    """
    if first not in FIRST_PROMPTS:
        raise InputError(f"first must be one of {', '.join(FIRST_PROMPTS)}, got {first!r}")
    if not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"rounds must be a positive integer, got {rounds!r}")
    gts, rng = [np.asarray(g) != 0 for g in gts], _generator(rng)
    if image is not None:
        predictor.set_image(image)
    n = len(gts)
    boxes = np.stack([mask_box(g) for g in gts]) if first == "box" else None
    clicks: list[list[tuple[int, int, int]]] = [[] if first == "box" else [sample_click(g, None, rng)] for g in gts]
    histories: list[list[tuple[np.ndarray, float]]] = [[] for _ in range(n)]
    preds: list[np.ndarray | None] = [None] * n
    logits: list[np.ndarray | None] = [None] * n
    active = list(range(n))
    for round_ in range(rounds):
        if round_ > 0:
            still = []
            for i in active:
                click = sample_click(gts[i], preds[i], rng)
                if click is not None:
                    clicks[i].append(click)
                    still.append(i)
            active = still
            for i in range(n):
                if i not in still:
                    histories[i].append(histories[i][-1])
            if not active:
                continue
        kwargs: dict = {} if boxes is None else {"box": boxes[active]}
        if clicks[active[0]]:
            kwargs["points"] = np.array([[c[:2] for c in clicks[i]] for i in active], dtype=np.float32)
            kwargs["point_labels"] = np.array([[c[2] for c in clicks[i]] for i in active], dtype=np.int64)
        if round_ > 0:
            kwargs["mask_input"] = np.concatenate([logits[i] for i in active])
        out = predictor.predict(multimask=is_lone_click(kwargs.get("box"), kwargs.get("points"),
                                                       kwargs.get("mask_input")), **kwargs)
        masks, scores = np.asarray(out.masks), np.asarray(out.scores)
        for row, i in enumerate(active):
            best = int(np.argmax(scores[row])) if masks.shape[1] > 1 else 0
            preds[i] = masks[row, best].astype(bool)
            logits[i] = np.asarray(out.logits, dtype=np.float32)[row:row + 1, best:best + 1]
            histories[i].append((preds[i], dice(preds[i], gts[i])))
    return histories


def clicks_from_errors(gt_batch: torch.Tensor, pred_batch: torch.Tensor | None,
                       rng: np.random.Generator | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per batch item, for iterative-click training.

    Args:
        gt_batch: (B, H, W) or (B, 1, H, W) ground truth, non-zero = object.
        pred_batch: same shape; bool, or values in [0, 1] thresholded at 0.5 (threshold logits
            yourself: ``logits > 0``). None gives first clicks at the ground truth.
        rng: a Generator (or seed) for random clicks (training); None for deepest-pixel clicks.

    Returns:
        ``points`` float32 (B, 1, 2) as (x, y) in the masks' pixel frame, and ``labels`` int64
        (B, 1): 1 positive, 0 negative, -1 (padding, ignored by the prompt encoder) for an item
        with nothing to correct (its point is (0, 0)). Both on ``gt_batch``'s device.
    """
    gt = gt_batch.detach().cpu()
    gt = (gt[:, 0] if gt.ndim == 4 else gt).numpy() != 0
    if gt.ndim != 3:
        raise InputError(f"gt_batch must be (B, H, W) or (B, 1, H, W), got {tuple(gt_batch.shape)}")
    pred = None
    if pred_batch is not None:
        p = pred_batch.detach().cpu()
        p = p[:, 0] if p.ndim == 4 else p
        pred = (p if p.dtype == torch.bool else p > 0.5).numpy()
        if pred.shape != gt.shape:
            raise InputError(f"pred_batch {tuple(pred_batch.shape)} and gt_batch {tuple(gt_batch.shape)} differ")
    rng = _generator(rng)
    points = np.zeros((len(gt), 1, 2), dtype=np.float32)
    labels = np.full((len(gt), 1), PADDING_LABEL, dtype=np.int64)
    for i, target in enumerate(gt):
        if pred is None and not target.any():
            continue
        click = sample_click(target, None if pred is None else pred[i], rng)
        if click is not None:
            points[i, 0], labels[i, 0] = click[:2], click[2]
    device = gt_batch.device
    return torch.from_numpy(points).to(device), torch.from_numpy(labels).to(device)
