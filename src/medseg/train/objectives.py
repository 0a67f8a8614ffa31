"""Training objectives: what a batch is, how it is scored, how a model is validated.

The loop in :mod:`medseg.train.loop` is the same for every objective; an objective supplies

* ``make_datasets(config) -> (train dataset, val dataset or None)``;
* ``loss(model, batch) -> (scalar loss, {name: detached scalar tensor})``, where ``model`` is
  called like ``PromptableSegmenter.forward`` (it may be a DDP wrapper) and ``batch`` is a
  default-collated batch already on the model's device;
* ``validate(model, loader) -> {"dice": float, ...}`` on the bare model (eval mode, no grad).

``OBJECTIVES`` maps names to factories ``factory(config) -> Objective``; later objectives
("distill", "mae", "universal") register themselves with :func:`register_objective`.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medseg.errors import InputError
from medseg.train.config import Config
from medseg.train.datasets import PromptedObjects, paired_cases


class Objective(Protocol):
    def make_datasets(self, config: Config) -> tuple[Dataset, Dataset | None]: ...

    def loss(self, model: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def validate(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]: ...


OBJECTIVES: dict[str, Callable[[Config], Objective]] = {}


def register_objective(name: str):
    """Class/function decorator: ``@register_objective("distill")`` adds a factory to OBJECTIVES."""
    def add(factory):
        OBJECTIVES[name] = factory
        return factory
    return add


def make_objective(config: Config) -> Objective:
    name = config.train.objective
    if name not in OBJECTIVES:
        raise InputError(f"config key 'train.objective': unknown objective {name!r}; "
                         f"available: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name](config)


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


def dice_scores(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-item Dice of bool masks (B, 1, S, S) -> (B,); 1 where both are empty."""
    pred, target = pred.flatten(1).float(), target.flatten(1).float()
    inter, total = (pred * target).sum(1), pred.sum(1) + target.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


@register_objective("supervised")
class SupervisedObjective:
    """Promptable fine-tuning: one box per object -> one mask; Dice + BCE (or focal) on the logits.

    Validation: mean Dice over the val objects of their box-prompted masks (logits > 0) in the
    S x S model frame (padding included, where the target is empty). With click rounds, the mean
    Dice over every round of the validation chains (deterministic clicks).
    """

    def __init__(self, config: Config) -> None:
        from monai.losses import DiceLoss

        self.train_cfg = config.train
        self.dice_loss = DiceLoss(sigmoid=True)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def make_datasets(self, config: Config) -> tuple[PromptedObjects, PromptedObjects | None]:
        d = config.data
        if d.image_size is None:
            raise InputError("data.image_size must be resolved (the model's input size) before making datasets")

        def build(split: str, jitter: float, augment: bool, limit: int | None) -> PromptedObjects:
            cases = paired_cases(d.root, split, limit)
            return PromptedObjects(cases, d.image_size, d.min_object_pixels, jitter, config.train.seed,
                                   d.modality, d.cache, what=f"split {split!r} of {d.root}", augment=augment)

        train = build(d.train_split, d.box_jitter, d.augment, d.limit)
        return train, (build(d.val_split, 0.0, False, d.val_limit or d.limit) if d.val_split else None)

    def loss(self, model: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch: image (B, 3, S, S), box (B, 4), target (B, 1, S, S) -> scalar loss and its parts.

        With ``train.click_rounds`` > 0 or ``train.first_prompt`` point/mixed, the loss is the mean
        over the rounds of an interactive chain (:mod:`medseg.train.interactive`)."""
        from medseg.train.interactive import batch_rng, interactive_loss, is_interactive

        cfg = self.train_cfg
        if is_interactive(cfg):
            rng = batch_rng(cfg.seed, self.epoch, batch["index"])
            return interactive_loss(model, batch["image"], batch["box"], batch["target"], cfg, self.dice_loss, rng)
        logits, _ = model(batch["image"], boxes=batch["box"])
        return segmentation_loss(logits, batch["target"], self.dice_loss, cfg)

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
        from medseg.train.interactive import interactive_validation, is_interactive

        device = next(model.parameters()).device
        if is_interactive(self.train_cfg):
            def batches():
                for batch in loader:
                    embedding, features = model.encode_features(batch["image"].to(device))
                    decode = lambda b, p, m, e=embedding, f=features: model.decode(e, b, p, m, features=f)  # noqa: E731
                    yield decode, batch["box"].to(device), batch["target"].to(device)
            return interactive_validation(batches(), self.train_cfg)
        scores = []
        for batch in loader:
            logits, _ = model(batch["image"].to(device), boxes=batch["box"].to(device))
            scores.append(dice_scores(logits > 0, batch["target"].to(device) > 0.5).cpu())
        dice = torch.cat(scores)
        return {"dice": float(dice.mean()), "objects": int(dice.numel())}
