"""The prompt strategy of promptable training: a first prompt, then corrective clicks (SAM-style).

Every promptable objective trains and validates chains; plain box training is the chain of one
round (``train.click_rounds: 0``, ``train.first_prompt: box``). One item is a chain of rounds on
one object:

* round 0: the first prompt, a box (``"box"``) or one positive click inside the object
  (``"point"``; random interior pixel in training, the deepest pixel in validation);
* round r >= 1: one more click on the largest error region of round r-1's mask (positive on a
  missed region, negative on a false one; :func:`medseg.data.prompt_sim.clicks_from_errors`), all
  clicks so far, the first box if there was one, and round r-1's logits (detached) as the mask prompt.

Every round's logits are scored, so the decoder learns to answer a box, a lone click, and a click
that corrects an earlier mask; with ``train.multimask`` the IoU head learns each mask's true IoU and a
lone click's 3 candidates are trained by the best one's loss (:func:`chain_loss`).
``decode(boxes, points, masks) -> (logits (B, 1, S, S), iou)`` is
the model's decoder on a fixed image embedding; boxes are (B, 4) x0, y0, x1, y1 and points
((B, K, 2) x, y; (B, K) labels) in model-input pixels; masks (B, 1, S, S) logits (S = 4 x the
embedding side, the SAM mask-prompt size).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from medseg.data.prompt_sim import clicks_from_errors
from medseg.models.implicit import sample_at
from medseg.train.losses import per_candidate_loss, segmentation_loss
from medseg.data.masks import dice_per_item, iou_per_item

Decode = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""``decode(boxes, points, masks, multimask=False) -> (logits, iou)``; ``multimask`` is passed only with
``train.multimask`` (then it must give the 3 candidates (B, 3, S, S), (B, 3))."""


def chain_outputs(decode: Decode, box: torch.Tensor, target: torch.Tensor, rounds: int, first: str,
                  rng: np.random.Generator | None):
    """Rounds 0..``rounds`` of one chain: ``([(logits (B, 1, S, S), iou (B, 1)) per round], first click)``,
    the first click ``((B, 1, 2) xy, (B, 1) labels)`` when ``first == "point"``, else None.

    Args:
        box: (B, 4) the objects' boxes (used when ``first == "box"``).
        target: (B, 1, S, S) {0, 1} object masks; clicks are drawn from them.
        first: "box" or "point".
        rng: random clicks (training) or None (deterministic clicks, validation).
    """
    if first not in ("box", "point"):
        raise ValueError(f"first prompt must be 'box' or 'point', got {first!r}")
    boxes = box if first == "box" else None
    points = labels = masks = None
    if first == "point":
        points, labels = clicks_from_errors(target, None, rng)
    first_click = None if points is None else (points, labels)
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for r in range(rounds + 1):
        if r > 0:
            previous = out[-1][0].detach()
            p, lab = clicks_from_errors(target, previous > 0, rng)
            points = p if points is None else torch.cat([points, p], 1)
            labels = lab if labels is None else torch.cat([labels, lab], 1)
            masks = previous
        logits, iou = decode(boxes, None if points is None else (points, labels), masks)
        out.append((logits[:, :1], iou[:, :1]))
    return out, first_click


def chain_logits(decode: Decode, box: torch.Tensor, target: torch.Tensor, rounds: int, first: str,
                 rng: np.random.Generator | None) -> list[torch.Tensor]:
    """Logits (B, 1, S, S) of rounds 0..``rounds`` of one chain (:func:`chain_outputs`)."""
    return [logits for logits, _ in chain_outputs(decode, box, target, rounds, first, rng)[0]]


def resolve_first(first: str, rng: np.random.Generator) -> str:
    """``first`` "mixed" drawn per batch (box or point, even odds); "box" and "point" as they are."""
    if first == "mixed":
        return "box" if rng.random() < 0.5 else "point"
    return first


def training_chain(decode: Decode, box: torch.Tensor, target: torch.Tensor, rounds: int, first: str,
                   rng: np.random.Generator) -> list[torch.Tensor]:
    """:func:`chain_logits` with ``first`` "mixed" drawn per batch (:func:`resolve_first`)."""
    return chain_logits(decode, box, target, rounds, resolve_first(first, rng), rng)


def true_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU (B, M) of each candidate's mask (logits (B, M, S, S) > 0) with the target (B, 1, S, S); 1 where
    both are empty."""
    pred, truth = logits > 0, (target > 0.5).expand_as(logits)
    return iou_per_item(pred.flatten(0, 1), truth.flatten(0, 1)).reshape(logits.shape[:2]).to(logits.device)


def iou_head_loss(logits: torch.Tensor, iou: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE of the predicted IoU (B, M) against each candidate's true IoU (SAM's IoU-head loss)."""
    return F.mse_loss(iou.float(), true_iou(logits.detach(), target))


def multimask_loss(decode: Decode, click: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor,
                   cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """A lone click's multimask candidates: (loss of the best candidate per item, IoU-head loss)."""
    logits, iou = decode(None, click, None, multimask=True)
    return per_candidate_loss(logits, target, cfg).min(1).values.mean(), iou_head_loss(logits, iou, target)


def validation_chains(first: str) -> tuple[str, ...]:
    """The chains validation runs for a ``train.first_prompt`` setting."""
    return ("box", "point") if first == "mixed" else (first,)


@torch.no_grad()
def chain_dice(decode: Decode, box: torch.Tensor, target: torch.Tensor, rounds: int,
               first: str) -> torch.Tensor:
    """Dice (B, rounds + 1) of every round of a deterministic chain (validation)."""
    chain = chain_logits(decode, box, target, rounds, first, None)
    truth = target > 0.5
    return torch.stack([dice_per_item(logits > 0, truth) for logits in chain], 1)


def batch_rng(seed: int, epoch: int, index: torch.Tensor) -> np.random.Generator:
    """Click generator of one batch, from (seed, epoch, the batch's item indices): resume-exact."""
    return np.random.default_rng([seed, epoch, *index.flatten().tolist()])


REFINE_POINTS = 2048   # points per object the implicit decoder is trained on, per step
UNCERTAIN_SHARE = 0.75  # of them, where the upsampling decoder is least sure; the rest uniform
OVERSAMPLE = 3          # candidates drawn per uncertain point


def uncertain_points(coarse: torch.Tensor, rng: np.random.Generator, count: int = REFINE_POINTS) -> torch.Tensor:
    """I-MedSAM's uncertainty-guided sampling: coarse logits (B, 1, S, S) -> (B, count, 2) continuous xy in
    model-input pixels: of ``OVERSAMPLE * count`` uniform candidates, the ``UNCERTAIN_SHARE`` whose
    (bilinear) logit is nearest 0, and uniform points for the rest."""
    b, size = coarse.shape[0], coarse.shape[-1]
    uncertain = int(count * UNCERTAIN_SHARE)
    drawn = torch.from_numpy(rng.random((b, OVERSAMPLE * uncertain + count - uncertain, 2), dtype=np.float32))
    drawn = drawn.to(coarse.device)
    candidates, uniform = drawn[:, :OVERSAMPLE * uncertain], drawn[:, OVERSAMPLE * uncertain:]
    closeness = -sample_at(coarse.float(), candidates)[:, 0].abs()  # (B, candidates)
    pick = closeness.topk(uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, pick[..., None].expand(-1, -1, 2))
    return torch.cat([chosen, uniform], 1) * size


def refinement_loss(decode_at: Callable[[torch.Tensor], torch.Tensor], coarse: torch.Tensor, target: torch.Tensor,
                    rng: np.random.Generator) -> torch.Tensor:
    """BCE of the implicit decoder at :func:`uncertain_points` of the upsampling decoder's ``coarse`` logits
    (B, 1, S, S), against the target (B, 1, S, S) at those points (its pixel there).
    ``decode_at(points (B, P, 2) xy in model-input pixels) -> logits (B, 1, P)``."""
    points = uncertain_points(coarse.detach(), rng)
    truth = F.grid_sample(target.float(), (points / target.shape[-1] * 2 - 1)[:, None], mode="nearest",
                          align_corners=False)[:, :, 0]  # (B, 1, P)
    return F.binary_cross_entropy_with_logits(decode_at(points).float(), truth)


def chain_loss(decode: Decode, box: torch.Tensor, target: torch.Tensor, cfg, dice_loss: Callable,
               rng: np.random.Generator, refine: Callable | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean segmentation loss over the rounds of one training chain per item (one round, the box,
    when ``train.click_rounds`` is 0 and ``train.first_prompt`` is "box": plain box training).

    With ``train.multimask``, every round also trains the IoU head (MSE to the mask's true IoU), and a
    chain that starts from a click adds the loss of the best of the lone click's multimask candidates
    (SAM's ambiguity-aware loss) and their IoU-head loss, so the best-scored candidate is the best one.

    ``refine(boxes, click, coarse logits) -> loss`` (a model with an implicit decoder, whose chain
    rounds ``decode`` with the upsampling decoder) adds the implicit decoder's loss on round 0's prompt
    (:func:`refinement_loss`).
    """
    first = resolve_first(cfg.first_prompt, rng)
    chain, click = chain_outputs(decode, box, target, cfg.click_rounds, first, rng)
    scored = [segmentation_loss(logits, target, dice_loss, cfg) for logits, _ in chain]
    loss = torch.stack([s[0] for s in scored]).mean()
    parts = {k: torch.stack([s[1][k] for s in scored]).mean() for k in scored[0][1]}
    if len(scored) > 1:
        parts["last_round_loss"] = scored[-1][0].detach()
    if cfg.multimask:
        iou = torch.stack([iou_head_loss(logits, pred, target) for logits, pred in chain]).mean()
        if click is not None:
            best, multi_iou = multimask_loss(decode, click, target, cfg)
            loss = loss + best
            iou = (iou + multi_iou) / 2
            parts["multimask_loss"] = best.detach()
        loss = loss + iou
        parts["iou_loss"] = iou.detach()
    if refine is not None:
        fine = refine(box if first == "box" else None, click, chain[0][0])
        loss = loss + fine
        parts["refine_loss"] = fine.detach()
    return loss, parts


@torch.no_grad()
def chain_validation(decoders, cfg) -> dict[str, float]:
    """Validation of chains: ``decoders`` yields ``(decode, box, target)`` per val batch.

    Returns ``{"dice": mean Dice over every round of every chain, "objects": n,
    "<first>_round<r>_dice": per chain and round}``; "dice" selects the best checkpoint.
    """
    chains = validation_chains(cfg.first_prompt)
    scores: dict[str, list[torch.Tensor]] = {c: [] for c in chains}
    for decode, box, target in decoders:
        for first in chains:
            scores[first].append(chain_dice(decode, box, target, cfg.click_rounds, first).cpu())
    table = {c: torch.cat(v) for c, v in scores.items()}
    out: dict[str, float] = {"dice": float(torch.stack([t.mean() for t in table.values()]).mean()),
                             "objects": int(next(iter(table.values())).shape[0])}
    for first, t in table.items():
        out.update({f"{first}_round{r}_dice": float(t[:, r].mean()) for r in range(t.shape[1])})
    return out
