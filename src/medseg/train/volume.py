"""Objective "volume": automatic 3D segmentation of planned patches (a 3D U-Net or ViT), in the same loop.

* planning: the train split's fingerprint gives the :class:`~medseg.data.planning.Plan` (target spacing,
  normalisation, patch size, classes, and a U-Net's pooling per level and axis; ``data.modality``,
  ``data.patch_voxels``), unless the model already carries one (fine-tuning a checkpoint keeps its plan);
  the plan goes into the model's weights, so every checkpoint preprocesses (and is built) as the run did;
* items: ``data.patches_per_epoch`` patches a epoch, each drawn from (seed, epoch, index): a case, a
  centre (a foreground voxel for ``data.foreground_fraction`` of them, else anywhere), and a mirroring of
  each axis with probability 1/2; with ``data.augment`` also rotations (in-plane only for thick-slice
  plans), zoom, elastic deformation and intensity changes (:mod:`medseg.data.augment3d`: draw the
  parameters, then the fixed transform); ``{"image": (C, pz, py,
  px) float32, "target": (1, pz, py, px) int64 class indices, "index": i}``; volumes smaller than the
  patch are zero-padded (target 0);
* loss: Dice + cross-entropy over background and the plan's classes (MONAI ``DiceCELoss``);
* validation: each val volume whole, by sliding window (:mod:`medseg.infer.sliding`) in the plan's frame;
  the mean over volumes and classes of the Dice of each class (1 where a class is absent from both).

Config: ``model.name: unet3d`` or ``vit3d`` (``model.init_encoder``: an MAE run's weights, see
:mod:`medseg.train.mae`), ``model.pretrained: false``, ``model.trainable: all`` (see
``configs/unet3d_hippocampus.yaml``, ``configs/vit3d_hippocampus.yaml``). The batch is ``train.batch_size``
as for every objective; the plan's ``batch_size`` is what fits its voxel budget, a value to copy there
(hippocampus: 6; la_heart_mri: 1 at 0.625 mm, 2 at 1.25 mm).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medseg.data.augment3d import RandomPatch3D, extract_patch
from medseg.data.cases import load_case
from medseg.data.datasets import dataset_cases
from medseg.data.masks import dice
from medseg.data.planning import PATCH_VOXELS, Plan, fingerprint, make_plan, preprocess
from medseg.errors import InputError
from medseg.train.config import Config
from medseg.train.datasets import EpochDraws
from medseg.train.objectives import Objective, RunContext, register_objective


def planned_volumes(cases, plan: Plan, progress: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every case preprocessed by ``plan``: [(image (C, Z, Y, X) float32, label (Z, Y, X) class index, uint8
    below 255 classes: an eighth of int64's memory)], the label's ids mapped to indices (0 background, k
    for ``plan.classes[k - 1]``)."""
    lookup = {c: k + 1 for k, c in enumerate(plan.classes)}
    out = []
    for case in tqdm(cases, desc="preprocess", unit="volume", disable=not progress, leave=False):
        image, label = load_case(case)
        x, y, _ = preprocess(image, label, plan)
        unknown = sorted(set(np.unique(y).tolist()) - {0} - set(lookup))
        if unknown:
            raise InputError(f"{case.mask_path}: label ids {unknown} are not among the plan's classes "
                             f"{plan.classes}; plan from a split that holds every class")
        index = np.zeros(y.shape, dtype=np.uint8 if len(plan.classes) < 255 else np.int32)
        for cid, k in lookup.items():
            index[y == cid] = k
        out.append((x, index))
    return out


class Patches(EpochDraws):
    """``count`` random patches of ``volumes`` a epoch (module docstring); ``set_epoch`` redraws them.
    ``augment``: a :class:`~medseg.data.augment3d.RandomPatch3D` (rotation, zoom, elastic, intensity and
    mirroring), or None for mirroring alone."""

    def __init__(self, volumes, patch, count: int, foreground_fraction: float, seed: int,
                 augment: RandomPatch3D | None = None) -> None:
        if not volumes:
            raise InputError("no volumes to train on")
        super().__init__(count, seed)
        self.volumes, self.patch, self.fraction = volumes, tuple(patch), foreground_fraction
        self.augment = augment or RandomPatch3D(p_rotate=0, p_scale=0, p_elastic=0, p_intensity=0, p_gamma=0,
                                                p_noise=0)
        self.foreground = [np.flatnonzero(y) for _, y in volumes]  # flat indices: a third of argwhere's memory

    def __getitem__(self, index: int) -> dict:
        rng = self.draw(index)
        case = int(rng.integers(len(self.volumes)))
        x, y = self.volumes[case]
        fg = self.foreground[case]
        if len(fg) and rng.random() < self.fraction:
            centre = np.unravel_index(fg[int(rng.integers(len(fg)))], y.shape)
        else:
            centre = [int(rng.integers(n)) for n in y.shape]
        image, target = extract_patch(x, y, centre, self.patch, self.augment.draw(rng))
        return {"image": torch.from_numpy(image), "target": torch.from_numpy(target.astype(np.int64))[None],
                "index": index}


class WholeVolumes(Dataset):
    """The val volumes by index; :meth:`VolumeObjective.validate` reads them whole."""

    def __init__(self, volumes) -> None:
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, index: int) -> dict:
        return {"index": index}


@register_objective("volume")
class VolumeObjective(Objective):
    """Automatic 3D segmentation of planned patches, Dice + cross-entropy."""

    trainable, trains = ("all",), "trains the whole network"

    def __init__(self, config: Config) -> None:
        from monai.losses import DiceCELoss

        super().__init__(config)
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=config.train.dice_weight,
                                  lambda_ce=config.train.pixel_weight)
        self.val_volumes: list = []
        self.plan: Plan | None = None

    def make_datasets(self, run: RunContext) -> tuple[Dataset, Dataset | None]:
        d, seed = self.config.data, self.config.train.seed
        model = run.model
        if getattr(model, "spatial_dims", None) != 3:
            raise InputError(f"objective 'volume' trains a 3D model (model.name: unet3d or vit3d), not "
                             f"{self.config.model.name!r}")
        train_cases = dataset_cases(d.root, d.train_split, d.limit)
        plan = model.plan
        if plan is None:
            fp = fingerprint(train_cases, modality=d.modality, progress=run.progress)
            plan = make_plan(fp, patch_voxels=d.patch_voxels or PATCH_VOXELS, divisor=max(16, model.divisor),
                             target_spacing=d.target_spacing, levels=getattr(model, "levels", None))
        model.set_plan(plan)
        self.plan = plan
        augment = RandomPatch3D(in_plane_axis=plan.coarse_axes[0] if plan.coarse_axes else None) if d.augment else None
        train = Patches(planned_volumes(train_cases, plan, run.progress), plan.patch_size, d.patches_per_epoch,
                        d.foreground_fraction, seed, augment)
        if not d.val_split:
            return train, None
        self.val_volumes = planned_volumes(dataset_cases(d.root, d.val_split, d.val_limit or d.limit), plan,
                                           run.progress)
        return train, WholeVolumes(self.val_volumes)

    def loss(self, forward: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch: image (B, C, pz, py, px), target (B, 1, pz, py, px) class indices -> Dice + CE."""
        logits = forward(lambda f: f.model(batch["image"])).float()
        loss = self.dice_ce(logits, batch["target"])
        return loss, {"dice_ce": loss.detach()}

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
        """Mean over val volumes and classes of each class's Dice (sliding window, the plan's frame)."""
        from medseg.infer.sliding import sliding_logits

        device = next(model.parameters()).device
        scores = []
        for batch in loader:
            for index in batch["index"].tolist():
                x, y = self.val_volumes[index]
                pred = sliding_logits(model, torch.from_numpy(x)[None].to(device), self.plan.patch_size)
                pred = pred.argmax(1)[0].cpu().numpy()
                scores += [dice(pred == k, y == k) for k in range(1, len(self.plan.classes) + 1)]
        return {"dice": float(np.mean(scores)) if scores else 0.0, "cases": len(scores)}
