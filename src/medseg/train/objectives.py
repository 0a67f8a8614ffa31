"""Training objectives: what a batch is, how it is scored, how a model is validated.

The loop in :mod:`medseg.train.loop` is the same for every objective. It builds the run's one
model, then calls, in this order, the methods of :class:`Objective` (every one exists; the base
class gives the defaults):

* ``prepare_model(model)``: change the model before freezing (distillation takes the teacher's
  decoder, a universal model adds its tasks); default: nothing;
* ``make_datasets(run) -> (train dataset, val dataset or None)``, with the run's context
  (:class:`RunContext`: the model, device, processes, cache folder);
* ``restrict_trainable(model)``: after ``model.trainable``, freeze more; default: nothing;
* per epoch ``set_epoch(epoch)``; per batch ``loss(forward, batch) -> (scalar loss, {name:
  detached scalar})``, where ``forward`` is :class:`medseg.train.optim.TrainForward` (maybe inside
  DDP: call ``forward(step)``) and ``batch`` a default-collated batch on the device;
* ``validate(model, loader) -> {"dice": float, ...}`` on the bare model (eval mode, no grad).

``OBJECTIVES`` maps names to factories ``factory(config) -> Objective``; objectives in their own
modules ("supervised_cached", "unet", "distill", "universal") register with :func:`register_objective`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from medseg.data.datasets import class_names, dataset_cases
from medseg.errors import InputError
from medseg.train import ddp
from medseg.train.config import Config
from medseg.train.datasets import PromptedObjects
from medseg.train.interactive import batch_rng, chain_loss, chain_validation, refinement_loss


@dataclass
class RunContext:
    """What the loop hands an objective's ``make_datasets``.

    Attributes:
        model: the run's one model (bare, already on ``device``); its encoder makes cached embeddings.
        device: where the run computes.
        dist: this process's place among the torchrun processes (rank, world size).
        cache_dir: the embedding cache folder (``train.cache_dir``).
        progress: show progress bars.
    """

    model: torch.nn.Module
    device: torch.device
    dist: ddp.DistInfo
    cache_dir: Path
    progress: bool = True


class Objective:
    """Base of the objectives: the optional steps as no-ops, the epoch kept for per-step draws.

    ``trainable`` names the ``model.trainable`` values an objective accepts (empty: any) and ``trains``
    says why, for the error a config with another value gets."""

    trainable: tuple[str, ...] = ()
    trains: str = ""

    def __init__(self, config: Config) -> None:
        if self.trainable and config.model.trainable not in self.trainable:
            allowed = " or ".join(repr(v) for v in self.trainable)
            raise InputError(f"config key 'model.trainable': objective {config.train.objective!r} {self.trains}; "
                             f"set it to {allowed}, got {config.model.trainable!r}")
        self.config = config
        self.epoch = 0

    def prepare_model(self, model: torch.nn.Module) -> None:
        """Change the model before parameters are frozen; default: nothing."""

    def restrict_trainable(self, model: torch.nn.Module) -> None:
        """Freeze more than ``model.trainable`` did; default: nothing."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def make_datasets(self, run: RunContext) -> tuple[Dataset, Dataset | None]:
        raise NotImplementedError

    def loss(self, forward: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def validate(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
        raise NotImplementedError


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


def require_image_size(config: Config) -> int:
    """``data.image_size``, which the loop resolves from the model before datasets are made."""
    if config.data.image_size is None:
        raise InputError("data.image_size must be resolved (the model's input size) before making datasets")
    return config.data.image_size


class PromptedObjective(Objective):
    """Promptable training of objects with the one prompt strategy of :mod:`medseg.train.interactive`:
    chains of a first prompt (box, click, or either) and ``train.click_rounds`` corrective clicks;
    plain box training is the chain of one round. Subclasses say where an item's embedding comes from."""

    def __init__(self, config: Config) -> None:
        from monai.losses import DiceLoss

        super().__init__(config)
        self.train_cfg = config.train
        self.dice_loss = DiceLoss(sigmoid=True)

    def encoded(self, encode: Callable, batch: dict, model: torch.nn.Module):
        """(embedding (B, 256, E, E), encoder features or None) of a batch; ``encode(images)`` encodes,
        ``model`` is the bare model."""
        return encode(batch["image"])

    def loss(self, forward: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch: image (B, 3, S, S) (or embedding), box (B, 4), target (B, 1, S, S), index (B,) ->
        the mean loss over the rounds of each item's chain, and its parts."""
        cfg = self.train_cfg
        rng = batch_rng(cfg.seed, self.epoch, batch["index"])

        def step(f):
            embedding, features = self.encoded(f.encode, batch, f.model)
            implicit = getattr(f.model, "has_implicit_decoder", False)
            # an implicit decoder trains on sampled points of round 0; the rounds use the decoder under it
            decode = lambda b, p, m, multimask=False: f.decode(embedding, b, p, m, multimask,  # noqa: E731
                                                                 features=features, refine=not implicit)

            def refine(b, p, coarse):
                at = lambda points: f.decode(embedding, b, p, None, features=features, at=points)[0]  # noqa: E731
                return refinement_loss(at, coarse, batch["target"], rng)

            return chain_loss(decode, batch["box"], batch["target"], cfg, self.dice_loss, rng,
                              refine if implicit else None)

        return forward(step)

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
        """Mean Dice over every round of the deterministic validation chains (logits > 0), in the
        S x S model frame; with one round, the box-prompted Dice of the val objects."""
        device = next(model.parameters()).device

        def batches():
            for batch in loader:
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                embedding, features = self.encoded(model.encode_features, batch, model)
                decode = lambda b, p, m, e=embedding, f=features: model.decode(e, b, p, m, features=f)  # noqa: E731
                yield decode, batch["box"], batch["target"]

        return chain_validation(batches(), self.train_cfg)


@register_objective("supervised")
class SupervisedObjective(PromptedObjective):
    """Promptable fine-tuning: one prompted chain per object -> masks; Dice + BCE (or focal) on the logits.

    Validation: mean Dice of the val objects' chains (box prompts by default) in the S x S model
    frame (padding included, where the target is empty).
    """

    def make_datasets(self, run: RunContext) -> tuple[PromptedObjects, PromptedObjects | None]:
        d, size = self.config.data, require_image_size(self.config)

        def build(split: str, jitter: float, augment: bool, limit: int | None) -> PromptedObjects:
            cases = dataset_cases(d.root, split, limit)
            return PromptedObjects(cases, size, d.min_object_pixels, jitter, self.config.train.seed,
                                   d.modality, d.cache, what=f"split {split!r} of {d.root}", augment=augment,
                                   declared=list(class_names(d.root)))

        train = build(d.train_split, d.box_jitter, d.augment, d.limit)
        return train, (build(d.val_split, 0.0, False, d.val_limit or d.limit) if d.val_split else None)
