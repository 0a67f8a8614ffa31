"""Objective "unet": automatic (prompt-free) binary segmentation with a U-Net, in the same loop.

* item: ``{"image": (3, S, S) float32 in [0, 1] from prepare_image (resized, zero-padded),
  "target": (1, S, S) float32, 1 where the label has any foreground class (or one of
  ``data.foreground_ids``: a U-Net per class of a multi-class set), "index": i}``, one per
  case (cases without foreground stay in: the model must learn to predict nothing there);
* augmentation (train split only): a horizontal flip of the image content with probability 1/2,
  drawn from (seed, epoch, index) so that resume is exact; the padding stays bottom/right;
* loss: Dice + BCE (or focal) on the logits, weights from ``train.*``;
* validation: mean per-case Dice in the S x S frame (1 where prediction and target are both empty).

Importing this module registers the objective and the U-Net models (``medseg.models.unet``).
Config: ``model.name: unet`` (or ``unet-tiny``), ``model.pretrained: false``, ``model.trainable: all``
(see ``configs/unet_kvasir.yaml``). ``medseg.models.unet.predict_mask`` segments one image at its
own resolution with the trained model.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medseg.errors import InputError
from medseg.data.cases import Case, load_case, plane_2d
from medseg.data.datasets import dataset_cases
from medseg.data.preprocess import label_frame, prepare_image
from medseg.train.config import Config
from medseg.data.masks import dice_per_item
from medseg.train.losses import segmentation_loss
from medseg.train.objectives import Objective, RunContext, register_objective, require_image_size



class CaseFrames(Dataset):
    """One item per case: prepared image (3, S, S) and binary foreground target (1, S, S).

    ``flip``: horizontal flip of the resized content (not the padding) with probability 1/2 per
    (seed, epoch, index). ``cache`` keeps prepared frames in memory after first use.
    """

    def __init__(self, cases: list[Case], size: int, modality: str | None = None, flip: bool = False,
                 seed: int = 0, cache: bool = True, foreground_ids: list[int] | None = None) -> None:
        if not cases:
            raise InputError("no cases to train the U-Net on")
        self.foreground_ids = list(foreground_ids or [])
        self.cases, self.size, self.modality, self.flip, self.seed, self.epoch = cases, size, modality, flip, seed, 0
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] | None = {} if cache else None
        for index in range(len(cases)):  # every pair is read and checked now, before a run folder is written
            self._frame(index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cases)

    def _frame(self, index: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        case = self.cases[index]
        image, label = load_case(case)
        x, record = prepare_image(plane_2d(image, "the U-Net objective"), self.size, self.modality)
        frame = label_frame(label.array[0], self.size)
        binary = np.isin(frame, self.foreground_ids) if self.foreground_ids else frame > 0
        target = torch.from_numpy(binary.astype(np.float32))[None]
        out = (x[0], target, record.resized_hw)
        if self._cache is not None:
            self._cache[index] = out
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        image, target, (h, w) = self._frame(index)
        if self.flip and np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5:
            image, target = image.clone(), target.clone()
            image[:, :h, :w] = image[:, :h, :w].flip(-1)
            target[:, :h, :w] = target[:, :h, :w].flip(-1)
        return {"image": image, "target": target, "index": index}


@register_objective("unet")
class UNetObjective(Objective):
    """Prompt-free binary segmentation (any foreground class vs background), Dice + BCE."""

    trainable, trains = ("all",), "trains the whole U-Net"

    def __init__(self, config: Config) -> None:
        from monai.losses import DiceLoss

        super().__init__(config)
        self.dice_loss = DiceLoss(sigmoid=True)

    def make_datasets(self, run: RunContext) -> tuple[CaseFrames, CaseFrames | None]:
        d, size, seed = self.config.data, require_image_size(self.config), self.config.train.seed

        def build(split: str, flip: bool) -> CaseFrames:
            cases = dataset_cases(d.root, split, (d.val_limit or d.limit) if split == d.val_split else d.limit)
            return CaseFrames(cases, size, d.modality, flip, seed, d.cache, d.foreground_ids)

        return build(d.train_split, True), (build(d.val_split, False) if d.val_split else None)

    def loss(self, forward: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch: image (B, 3, S, S), target (B, 1, S, S) -> scalar loss and its parts."""
        logits = forward(lambda f: f.model(batch["image"]))
        if logits.shape[1] != 1:
            raise InputError(f"objective 'unet' needs a model with one output map, got {logits.shape[1]}")
        return segmentation_loss(logits, batch["target"], self.dice_loss, self.config.train)

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
        """Mean per-case Dice of (logits > 0) against the target in the S x S frame."""
        device = next(model.parameters()).device
        scores = []
        for batch in loader:
            logits = model(batch["image"].to(device))
            scores.append(dice_per_item(logits > 0, batch["target"].to(device) > 0.5).cpu())
        dice = torch.cat(scores)
        return {"dice": float(dice.mean()), "cases": int(dice.numel())}
