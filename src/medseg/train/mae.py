"""Objective "mae": masked-image pre-training on volumes (Hi-End-MAE; a 3D ViT, the model
:class:`~medseg.models.mae.MaskedAutoencoder`, ``model.name: mae3d``) or on 2D pictures (an HR encoder,
:class:`~medseg.models.mim2d.MaskedImageModel`, ``model.name: mim-hr-small``), in the same loop.

2D (``configs/mim_2d.yaml``): every train-split picture of ``data.root`` or of ``data.tasks``, never val or
test, each prepared as the model sees it (``medseg.data.preprocess.prepare_image``, the task's intensity
window) with ``data.augment``'s 2D augmentation; one item per picture an epoch. 3D:

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

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data.augment3d import RandomPatch3D
from medseg.data.cases import plane_2d
from medseg.data.datasets import dataset_cases
from medseg.data.planning import PATCH_VOXELS, fingerprint, make_plan
from medseg.data.preprocess import prepare_image
from medseg.errors import InputError
from medseg.io import read_image
from medseg.train.config import Config
from medseg.train.objectives import Objective, RunContext, register_objective
from medseg.train.volume import Patches, planned_volumes


def pretraining_sources(config: Config) -> list[tuple]:
    """(dataset folder, intensity window or None) of ``data.root`` (``data.modality``) or of the tasks of
    ``data.tasks`` (``data.task_names``, default all; each its own window)."""
    d = config.data
    if d.tasks:
        from medseg.data.tasks import load_tasks

        tasks = load_tasks(d.tasks)
        unknown = [n for n in d.task_names if n not in tasks]
        if unknown:
            raise InputError(f"config key 'data.task_names': {unknown} are not in {d.tasks} ({', '.join(tasks)})")
        return [(tasks[n].root, tasks[n].normalisation) for n in (d.task_names or tasks)]
    if d.root is None:
        raise InputError("objective 'mae' needs data.root or data.tasks: the images to pre-train on")
    return [(d.root, d.modality)]


@register_objective("mae")
class MAEObjective(Objective):
    """Masked-autoencoder pre-training on train volumes (module docstring)."""

    trainable, trains = ("all",), "pre-trains the whole masked autoencoder"

    def __init__(self, config: Config) -> None:
        if config.data.val_split:
            raise InputError("objective 'mae' pre-trains on train images only and does not validate: "
                             "set data.val_split: null")
        super().__init__(config)

    def make_datasets(self, run: RunContext) -> tuple[Dataset, None]:
        model, d = run.model, self.config.data
        if not hasattr(model, "mask_ratio"):
            raise InputError(f"objective 'mae' pre-trains a masked autoencoder (model.name: mae3d, or mim-hr-small "
                             f"for 2D pictures), not {self.config.model.name!r}")
        if model.spatial_dims == 2:
            return self._pictures(model.image_size), None
        if len(d.crop_size) != 3 or min(d.crop_size) <= 0:
            raise InputError(f"config key 'data.crop_size' needs three positive sides (Z, Y, X), got {d.crop_size}")
        patch = model.image_encoder.patch
        if any(c % patch for c in d.crop_size):
            raise InputError(f"config key 'data.crop_size' {d.crop_size}: every side must be a multiple of the "
                             f"ViT's patch, {patch}")
        volumes = []
        for root, _ in pretraining_sources(self.config):
            cases = dataset_cases(root, d.train_split, d.limit)
            plan = make_plan(fingerprint(cases, progress=run.progress), patch_voxels=d.patch_voxels or PATCH_VOXELS,
                             target_spacing=d.target_spacing)
            volumes += planned_volumes(cases, plan, run.progress)
        augment = RandomPatch3D() if d.augment else None
        return Patches(volumes, d.crop_size, d.patches_per_epoch, 0.5, self.config.train.seed, augment), None

    def _pictures(self, size: int) -> "Pictures":
        d = self.config.data
        sources = [(case, window) for root, window in pretraining_sources(self.config)
                   for case in dataset_cases(root, d.train_split, d.limit)]
        return Pictures(sources, size, self.config.train.seed, d.augment)

    def loss(self, forward: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch: image (B, C, Z, Y, X) crops or (B, 3, S, S) pictures -> the masked autoencoder's loss."""
        loss = forward(lambda f: f.model(batch["image"])[0]).float()
        return loss, {"mae": loss.detach()}


class Pictures(Dataset):
    """One item per 2D picture: ``{"image": (3, S, S) float32 in [0, 1], "index": i}``, prepared as the model
    sees it (``prepare_image``, the source's intensity window) and, with ``augment``, the 2D training
    augmentation drawn from (seed, epoch, index). ``sources``: (case, intensity window or None)."""

    def __init__(self, sources: list, size: int, seed: int, augment: bool) -> None:
        from medseg.data.augment import train_augmentation

        if not sources:
            raise InputError("no pictures to pre-train on: the train splits are empty")
        self.sources, self.size, self.seed, self.epoch = sources, size, seed, 0
        self.augmentation = train_augmentation() if augment else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        case, window = self.sources[index]
        picture = plane_2d(read_image(case.image_path), "2D masked-image pre-training (a 3D set: use mae3d)")
        x, _ = prepare_image(picture, self.size, window)
        image = x[0].numpy()
        if self.augmentation is not None:
            sample = {"image": image, "mask": np.zeros(image.shape[1:], dtype=np.uint8)}
            image = self.augmentation(sample, [self.seed, self.epoch, index])["image"]
        return {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), "index": index}
