"""Segmentation losses of the training objectives: Dice + a pixel loss (BCE or focal) on logits."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, reduce: bool = True) -> torch.Tensor:
    """Sigmoid focal loss: BCE scaled by (1 - p_t)^gamma; logits and target of one shape; the mean, or
    per element with ``reduce=False``."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = bce * (1 - p_t) ** gamma
    return loss.mean() if reduce else loss


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_loss: Callable,
                      cfg) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted Dice + pixel loss (BCE or focal, ``cfg.pixel_loss``) of logits (B, 1, S, S) against a
    {0, 1} target of the same shape; returns the scalar loss and its detached parts."""
    logits = logits.float()
    dice = dice_loss(logits, target)
    if cfg.pixel_loss == "focal":
        pixel = focal_loss(logits, target, cfg.focal_gamma)
    else:
        pixel = F.binary_cross_entropy_with_logits(logits, target)
    loss = cfg.dice_weight * dice + cfg.pixel_weight * pixel
    return loss, {"dice_loss": dice.detach(), cfg.pixel_loss: pixel.detach()}


def per_candidate_loss(logits: torch.Tensor, target: torch.Tensor, cfg) -> torch.Tensor:
    """:func:`segmentation_loss` of each candidate mask on its own: logits (B, M, S, S) against a {0, 1}
    target (B, 1, S, S) -> (B, M). Soft Dice as MONAI's (sigmoid, smoothing 1e-5) + the pixel loss."""
    logits = logits.float()
    t = target.float().expand_as(logits)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * t).sum((-2, -1)) + 1e-5) / (p.sum((-2, -1)) + t.sum((-2, -1)) + 1e-5)
    if cfg.pixel_loss == "focal":
        pixel = focal_loss(logits, t, cfg.focal_gamma, reduce=False)
    else:
        pixel = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    return cfg.dice_weight * dice + cfg.pixel_weight * pixel.mean((-2, -1))
