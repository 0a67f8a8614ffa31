"""Objective "mae": masked-image pre-training of a ViT encoder on volumes (Hi-End-MAE; the model is
:class:`~medseg.models.mae.MaskedAutoencoder`, ``model.name: mae3d``), in the same loop.

* data: the train split of ``data.root``, or of every task of ``data.tasks`` (``data.task_names``),
  never val or test; each dataset is planned from its own train split (its target spacing, or
  ``data.target_spacing``; z-score or CT normalisation) and preprocessed once;
* items: ``data.patches_per_epoch`` crops of ``data.crop_size`` (Z, Y, X) a epoch, half of them centred
  on a labelled voxel (where the anatomy is), drawn from (seed, epoch, index), with ``data.augment``'s
  3D augmentation (:mod:`medseg.data.augment3d`); labels are not otherwise used;
* loss: the masked autoencoder's per-token normalised MSE on the hidden tokens;
* no validation (``data.val_split: null``): the run keeps ``latest.*``, whose ``image_encoder.*``
  tensors a 3D ViT segmenter starts from (``model.name: vit3d``, ``model.init_encoder: RUN/latest.safetensors``).

See ``configs/mae_3d.yaml``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Dataset

from medseg.data.augment3d import RandomPatch3D
from medseg.data.datasets import dataset_cases
from medseg.data.planning import PATCH_VOXELS, fingerprint, make_plan
from medseg.errors import InputError
from medseg.train.config import Config
from medseg.train.objectives import Objective, RunContext, register_objective
from medseg.train.volume import Patches, planned_volumes


def pretraining_roots(config: Config) -> list:
    """The dataset folders of ``data.root`` or ``data.tasks`` (``data.task_names``, default all)."""
    d = config.data
    if d.tasks:
        from medseg.data.tasks import load_tasks

        tasks = load_tasks(d.tasks)
        unknown = [n for n in d.task_names if n not in tasks]
        if unknown:
            raise InputError(f"config key 'data.task_names': {unknown} are not in {d.tasks} ({', '.join(tasks)})")
        return [tasks[n].root for n in (d.task_names or tasks)]
    if d.root is None:
        raise InputError("objective 'mae' needs data.root or data.tasks: the volumes to pre-train on")
    return [d.root]


@register_objective("mae")
class MAEObjective(Objective):
    """Masked-autoencoder pre-training on train volumes (module docstring)."""

    trainable, trains = ("all",), "pre-trains the whole masked autoencoder"

    def __init__(self, config: Config) -> None:
        if config.data.val_split:
            raise InputError("objective 'mae' pre-trains on train volumes only and does not validate: "
                             "set data.val_split: null")
        if len(config.data.crop_size) != 3 or min(config.data.crop_size) <= 0:
            raise InputError(f"config key 'data.crop_size' needs three positive sides (Z, Y, X), got "
                             f"{config.data.crop_size}")
        super().__init__(config)

    def make_datasets(self, run: RunContext) -> tuple[Dataset, None]:
        model, d = run.model, self.config.data
        if not hasattr(model, "mask_ratio") or getattr(model, "spatial_dims", None) != 3:
            raise InputError(f"objective 'mae' pre-trains a 3D masked autoencoder (model.name: mae3d), not "
                             f"{self.config.model.name!r}")
        patch = model.image_encoder.patch
        if any(c % patch for c in d.crop_size):
            raise InputError(f"config key 'data.crop_size' {d.crop_size}: every side must be a multiple of the "
                             f"ViT's patch, {patch}")
        volumes = []
        for root in pretraining_roots(self.config):
            cases = dataset_cases(root, d.train_split, d.limit)
            plan = make_plan(fingerprint(cases, progress=run.progress), patch_voxels=d.patch_voxels or PATCH_VOXELS,
                             target_spacing=d.target_spacing)
            volumes += planned_volumes(cases, plan, run.progress)
        augment = RandomPatch3D() if d.augment else None
        return Patches(volumes, d.crop_size, d.patches_per_epoch, 0.5, self.config.train.seed, augment), None

    def loss(self, forward: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch: image (B, C, Z, Y, X) crops -> the masked autoencoder's loss."""
        loss = forward(lambda f: f.model(batch["image"])[0]).float()
        return loss, {"mae": loss.detach()}
