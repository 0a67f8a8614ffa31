"""Objective "universal": one automatic model for many tasks, from cached image embeddings.

The image encoder is frozen; its embeddings of every case of every task are cached once
(:mod:`medseg.train.embeddings`, all cases, empty masks too: the model must learn to find nothing).
What trains is the universal model's automatic head (:mod:`medseg.models.universal`): prior tokens,
self-prompt head and its mask decoder (``model.trainable: automatic``).

* tasks: ``universal.tasks`` names a task file (:mod:`medseg.data.tasks`); ``universal.train_tasks``
  picks some of them (default all). Tasks the model does not know yet get new tokens before step 1;
* sampling: each item draws a task with probability ``universal.weights`` (default proportional to
  the square root of its number of train cases), then one of its cases, from (seed, epoch, index),
  so resume stays exact; ``universal.epoch_size`` items per epoch (default: all train cases);
* item: ``{"embedding": (256, E, E), "label": (S, S) uint8 label frame (resized, padded),
  "task": task index, "index": i}``;
* partial labels: each item's loss covers only its own task's classes: one query per class, target
  ``label == class id``; Dice + BCE (or focal) on the final logits plus ``universal.coarse_weight`` x
  the same on the self-prompt's coarse logits (target area-downsampled to E x E); every item weighs
  the same (its queries share its weight), so torchrun processes average to the one-process loss;
* validation: every val case of every train task: the label map (argmax over the task's classes,
  background where no logit > 0) against the label frame, Dice per class (1 when both are empty);
  the mean per task, then over tasks, is the ``dice`` that picks ``best.*``;
* adding a task to a trained model: ``model.checkpoint`` = the trained model, ``train_tasks`` = the
  new task. ``freeze_old`` keeps the old tasks' tokens fixed; ``train_shared: false`` trains only the
  new tokens (the old tasks' outputs cannot change); ``task_rank: r`` gives each new task its own
  rank-r update of the head's decoder, which trains with its tokens (with ``train_shared: false`` the
  old tasks still cannot change); ``replay`` mixes old tasks' data back in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from medseg.data.masks import dice
from medseg.data.tasks import TaskSource, load_tasks
from medseg.errors import InputError
from medseg.data.cases import Case
from medseg.data.datasets import dataset_cases
from medseg.data.preprocess import label_frame
from medseg.io import read_label
from medseg.train.config import Config
from medseg.train.datasets import EpochDraws
from medseg.train.embeddings import EmbeddingStore
from medseg.train.cached import embeddings_main_first
from medseg.train.optim import bare_model
from medseg.train.losses import focal_loss
from medseg.train.objectives import Objective, RunContext, register_objective, require_image_size


class TaskCases(Dataset):
    """Every case of one split of one task: cached embedding + label frame.

    ``dataset[i]`` -> ``{"embedding": (256, E, E), "label": (S, S) uint8, "task": task_index, "index": i}``.
    """

    def __init__(self, task: TaskSource, task_index: int, cases: list[Case], store: EmbeddingStore, size: int) -> None:
        self.task, self.task_index, self.cases, self.store, self.size = task, task_index, cases, store, size
        self._labels: dict[int, np.ndarray] = {}
        for i in range(len(cases)):  # every mask read and checked against its image now, before training
            self.label(i)

    def __len__(self) -> int:
        return len(self.cases)

    def label(self, i: int) -> np.ndarray:
        if i not in self._labels:
            case = self.cases[i]
            array = read_label(case.mask_path).array
            if array.shape[0] != 1:
                raise InputError(f"{case.mask_path}: a 3D label; the universal objective takes 2D cases")
            self.store.check_mask(case, array.shape[1:])
            frame = label_frame(array[0], self.size)
            if frame.max() > 255:
                raise InputError(f"{case.mask_path}: label ids above 255 are not supported here")
            self._labels[i] = frame.astype(np.uint8)
        return self._labels[i]

    def __getitem__(self, i: int) -> dict:
        return {"embedding": self.store.embedding(self.cases[i].stem), "label": torch.from_numpy(self.label(i)),
                "task": self.task_index, "index": i}


class MixedTasks(EpochDraws):
    """Items drawn across tasks: index i of epoch e -> task ~ weights, then a uniform case, from
    ``default_rng([seed, e, i])``."""

    def __init__(self, parts: list[TaskCases], weights: list[float], size: int, seed: int = 0) -> None:
        if len(parts) != len(weights) or not parts:
            raise InputError(f"{len(weights)} sampling weights for {len(parts)} tasks")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise InputError(f"config key 'universal.weights': must be >= 0 with a positive sum, got {weights}")
        super().__init__(size, seed)
        self.parts, self.p = parts, w / w.sum()

    def __getitem__(self, index: int) -> dict:
        rng = self.draw(index)
        part = self.parts[rng.choice(len(self.parts), p=self.p)]
        item = part[int(rng.integers(len(part)))]
        return {**item, "index": index}


def universal_model(model: torch.nn.Module):
    """The UniversalSegmenter inside DDP / TrainForward wrappers; InputError for another model."""
    from medseg.models.universal import UniversalSegmenter

    inner = bare_model(model)
    if not isinstance(inner, UniversalSegmenter):
        raise InputError("objective 'universal' needs a universal model (model.name: universal, universal-hr "
                         "or universal-tiny)")
    return inner


def query_targets(model, labels: torch.Tensor, tasks: list[str], index: torch.Tensor) -> torch.Tensor:
    """Binary targets (N, 1, S, S) of the queries ``index`` (item, class k): ``label[item] == id of class k``."""
    ids = torch.tensor([list(model.tasks[tasks[b]].classes)[k] for b, k in index.tolist()], dtype=torch.long,
                       device=labels.device)
    return (labels[index[:, 0].to(labels.device)].long() == ids[:, None, None]).float()[:, None]


def per_class_dice(logits: torch.Tensor, index: torch.Tensor, labels: torch.Tensor, tasks: list[str],
                   model) -> list[tuple[str, int, float]]:
    """(task, class id, Dice) per item and class of its task, from the argmax label map."""
    from medseg.models.universal import label_map

    out = []
    for b, name in enumerate(tasks):
        ids = list(model.tasks[name].classes)
        pred = label_map(logits[index[:, 0] == b][:, 0].float(), ids)
        truth = labels[b].to(pred.device).long()
        out += [(name, cid, dice(pred == cid, truth == cid)) for cid in ids]
    return out


def summarise(scores: list[tuple[str, int, float]]) -> dict[str, float]:
    """{"dice": mean over tasks of each task's mean, "dice/<task>": ..., "dice/<task>/<class id>": ...}."""
    out: dict[str, float] = {}
    tasks = sorted({t for t, _, _ in scores})
    for t in tasks:
        out[f"dice/{t}"] = float(np.mean([d for n, _, d in scores if n == t]))
        for cid in sorted({c for n, c, _ in scores if n == t}):
            out[f"dice/{t}/{cid}"] = float(np.mean([d for n, c, d in scores if n == t and c == cid]))
    out["dice"] = float(np.mean([out[f"dice/{t}"] for t in tasks])) if tasks else float("nan")
    return out


def task_split(task: TaskSource, index: int, split: str, run: RunContext, size: int, limit: int | None) -> TaskCases:
    """TaskCases of one split, embeddings computed where not cached (main process first under torchrun)."""
    cases = dataset_cases(task.root, split, limit)
    store = embeddings_main_first(run, cases, label=f"{Path(task.root).name}-{split}-all", modality=task.normalisation)
    return TaskCases(task, index, cases, store, size)


@register_objective("universal")
class UniversalObjective(Objective):
    """Prompt-free multi-task segmentation with task/modality prior tokens (see the module docstring)."""

    trainable, trains = ("automatic",), "trains the automatic head on cached embeddings"

    def __init__(self, config: Config) -> None:
        from monai.losses import DiceLoss

        super().__init__(config)
        u = config.universal
        if u.tasks is None:
            raise InputError("config key 'universal.tasks': name a task file (see medseg.data.tasks), e.g. "
                             "configs/tasks_2d.yaml")
        self.config, self.cfg, self.train_cfg = config, u, config.train
        self.all_tasks = load_tasks(u.tasks)
        names = u.train_tasks or list(self.all_tasks)
        unknown = [n for n in names + u.replay if n not in self.all_tasks]
        if unknown:
            raise InputError(f"config keys 'universal.train_tasks'/'replay': {unknown} not in {u.tasks} "
                             f"(it has {', '.join(self.all_tasks)})")
        if u.weights and len(u.weights) != len(names) + len(u.replay):
            raise InputError(f"config key 'universal.weights': {len(u.weights)} weights for "
                             f"{len(names) + len(u.replay)} tasks (train_tasks then replay)")
        self.train_names, self.replay = names, [n for n in u.replay if n not in names]
        self.task_names: list[str] = []
        self.old_tasks: list[str] = []
        self.dice_loss = DiceLoss(sigmoid=True, reduction="none")

    def prepare_model(self, model: torch.nn.Module) -> None:
        """Add the train tasks the model does not know; remember the ones it did (to freeze them)."""
        model = universal_model(model)
        self.old_tasks = list(model.tasks)
        for name in self.replay:
            if name not in model.tasks:
                raise InputError(f"config key 'universal.replay': task {name!r} is not known to the starting model "
                                 f"(it knows {', '.join(model.tasks) or 'none'})")
        for name in self.train_names:
            task = self.all_tasks[name]
            if name in model.tasks:
                known = model.tasks[name]
                if known.classes != task.classes or known.window != task.window:
                    raise InputError(f"task {name!r}: the model knows classes {known.classes} (window "
                                     f"{known.window}), the task file says {task.classes} (window {task.window})")
            else:
                model.automatic.add_task(name, task.modality, task.classes, task.window, rank=self.cfg.task_rank)

    def restrict_trainable(self, model: torch.nn.Module) -> None:
        """After ``model.trainable``: freeze old tasks' tokens and updates (``freeze_old``) and the shared
        head (``train_shared: false``)."""
        model = universal_model(model)
        if not self.cfg.train_shared:
            for name, p in model.automatic.named_parameters():
                if not name.startswith(("class_tokens.", "modality_tokens.", "task_updates.sets.")):
                    p.requires_grad_(False)
        if self.cfg.freeze_old and self.old_tasks:
            model.automatic.freeze_tasks(self.old_tasks)

    def make_datasets(self, run: RunContext) -> tuple[Dataset, Dataset | None]:
        d, u, size = self.config.data, self.cfg, require_image_size(self.config)
        self.task_names = self.train_names + self.replay
        train = [task_split(self.all_tasks[n], i, d.train_split, run, size, d.limit)
                 for i, n in enumerate(self.task_names)]
        weights = u.weights or [float(np.sqrt(len(part))) for part in train]
        epoch_size = u.epoch_size or sum(len(part) for part in train)
        mixed = MixedTasks(train, weights, epoch_size, self.config.train.seed)
        val = None
        if d.val_split:
            val = ConcatDataset([task_split(self.all_tasks[n], i, d.val_split, run, size, d.val_limit or d.limit)
                                 for i, n in enumerate(self.train_names)])
        return mixed, val

    def loss(self, model: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch: embedding (B, 256, E, E), label (B, S, S), task (B,) -> scalar loss and its parts."""
        inner = universal_model(model)
        tasks = [self.task_names[i] for i in batch["task"].tolist()]
        logits, coarse, index = model(lambda f: f.model.segment(batch["embedding"], tasks))
        target = query_targets(inner, batch["label"], tasks, index)
        # each item weighs the same whatever its number of classes (so DDP's average over processes equals
        # one process with the whole batch): query n of item b weighs 1 / (B * K_b)
        counts = torch.bincount(index[:, 0], minlength=len(tasks)).to(logits.device)
        weights = 1.0 / (len(tasks) * counts[index[:, 0].to(logits.device)].float())
        dice, pixel = self.query_losses(logits, target)
        small = F.interpolate(target, size=coarse.shape[-2:], mode="area")
        coarse_dice, coarse_pixel = self.query_losses(coarse, small)
        cfg = self.train_cfg
        main = (weights * (cfg.dice_weight * dice + cfg.pixel_weight * pixel)).sum()
        coarse_loss = (weights * (cfg.dice_weight * coarse_dice + cfg.pixel_weight * coarse_pixel)).sum()
        parts = {"dice_loss": (weights * dice).sum().detach(), cfg.pixel_loss: (weights * pixel).sum().detach(),
                 "coarse": coarse_loss.detach()}
        return main + self.cfg.coarse_weight * coarse_loss, parts

    def query_losses(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-query Dice loss and pixel loss (BCE or focal, mean over pixels): two (N,) tensors."""
        logits = logits.float()
        dice = self.dice_loss(logits, target).reshape(-1)
        if self.train_cfg.pixel_loss == "focal":
            pixel = focal_loss(logits, target, self.train_cfg.focal_gamma, reduce=False)
        else:
            pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return dice, pixel.flatten(1).mean(1)

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
        """Mean over tasks of the mean per-case, per-class Dice of the automatic label maps."""
        inner = universal_model(model)
        device = next(inner.parameters()).device
        scores = []
        for batch in loader:
            tasks = [self.task_names[i] for i in batch["task"].tolist()]
            logits, _, index = inner.segment(batch["embedding"].to(device), tasks)
            scores += per_class_dice(logits, index, batch["label"], tasks, inner)
        return summarise(scores)
