"""Objective "supervised_cached": decoder-only fine-tuning from cached image embeddings.

The image encoder is frozen, so its output for an image never changes: :mod:`medseg.train.embeddings`
computes it once per image with the run's own model and caches it on disk, and every epoch runs
only the prompt encoder and mask decoder (~15-150 ms instead of ~1.5-3 s per image on a 2-core CPU).

* item: ``{"embedding": (256, E, E) float32, "box": (4,) x0, y0, x1, y1 in model-input pixels,
  "target": (1, S, S) float32 {0, 1}, "index": i}``, one per object (connected component of one
  class, >= ``data.min_object_pixels`` in the S x S frame), exactly as the "supervised" objective's
  :class:`~medseg.train.datasets.PromptedObjects` (same label frame, same box, same jitter rule:
  :func:`medseg.data.prompts.object_box`, drawn from (seed, epoch, index));
* loss and validation: those of the "supervised" objective (:class:`~medseg.train.objectives.PromptedObjective`:
  box chains, or click rounds with ``train.click_rounds`` / ``train.first_prompt``), decoding the
  cached embedding instead of encoding the image.

It runs in the ordinary :func:`medseg.train.train` loop (configs, checkpoints, resume), so the saved
checkpoint is a full state dict (encoder weights unchanged) that ``build_model(name, checkpoint=...)``
and ``medseg evaluate --checkpoint`` load. ``model.trainable`` must leave the encoder frozen
(decoder, prompt_decoder, encoder_frozen, or conv_branch: SAM-UNet's branch beside the frozen encoder,
whose items then carry the prepared image too, :class:`PreparedImages`).

The objects come from ``data.root``, or from every dataset of a task file (``data.tasks``, optionally
only ``data.task_names``), each with its task's intensity window, together in one set
(:class:`ObjectsOfSeveral`); a dataset without a split file trains only. ``data.max_objects_per_case``
keeps a random subset of an image's objects.

The cache folder is ``train.cache_dir`` (``medseg train`` fills it from ``$MEDSEG_EMBEDDING_CACHE``;
default ``~/.cache/medseg/embeddings``); only cases with an object are embedded. ``data.cache`` has
no effect here: items read memory-mapped shards.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from medseg.data.cases import Case
from medseg.data.datasets import class_names, dataset_cases, open_dataset
from medseg.data.masks import frame_objects
from medseg.data.preprocess import label_frame, prepare_image
from medseg.data.prompts import object_box
from medseg.errors import InputError
from medseg.io import read_label
from medseg.train import ddp
from medseg.train.config import Config
from medseg.train.embeddings import EmbeddingStore, build_embeddings, load_plane
from medseg.train.objectives import PromptedObjective, RunContext, register_objective, require_image_size

FROZEN_ENCODER = ("decoder", "prompt_decoder", "encoder_frozen")


def case_objects(cases: list[Case], size: int, min_pixels: int,
                 declared: Collection[int] = ()) -> tuple[list[tuple[int, np.ndarray]], list[tuple[int, int]]]:
    """(case index, bool (S, S) object mask) of every object of ``cases`` in the model frame, and
    each case's mask size (H, W), for :meth:`EmbeddingStore.check_mask`."""
    found, shapes = [], []
    for c, case in enumerate(cases):
        label = read_label(case.mask_path).array
        if label.shape[0] != 1:
            raise InputError(f"{case.mask_path}: a 3D label; cached fine-tuning takes 2D cases")
        shapes.append(label.shape[1:])
        found += [(c, mask) for mask in frame_objects(label_frame(label[0], size), min_pixels, case.mask_path, declared)]
    return found, shapes


class PreparedImages:
    """The model inputs (3, S, S) of cases, prepared on first use and kept as float16 (a conv branch reads
    the image beside the cached embedding): ``images[case_index]``."""

    def __init__(self, cases: list[Case], size: int, modality: str | None) -> None:
        self.cases, self.size, self.modality, self.kept = cases, size, modality, {}

    def __getitem__(self, index: int) -> torch.Tensor:
        if index not in self.kept:
            x, _ = prepare_image(load_plane(self.cases[index].image_path), self.size, self.modality)
            self.kept[index] = x[0].half()
        return self.kept[index].float()


class CachedObjects(Dataset):
    """One item per object, its image's embedding read from an :class:`EmbeddingStore`.

    ``dataset[i]`` -> ``{"embedding": (256, E, E), "box": (4,), "target": (1, S, S), "index": i}``, and
    ``"image"`` (3, S, S) when given ``images`` (:class:`PreparedImages`).
    """

    def __init__(self, cases: list[Case], objects: list[tuple[int, np.ndarray]], store: EmbeddingStore,
                 box_jitter: float = 0.0, seed: int = 0, images: PreparedImages | None = None) -> None:
        self.cases, self.store, self.box_jitter, self.seed, self.epoch = cases, store, box_jitter, seed, 0
        self.items = [(cases[c].stem, np.packbits(mask), mask.shape, c) for c, mask in objects]
        self.images = images

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        stem, packed, shape, case = self.items[index]
        mask = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        box = object_box(mask, self.box_jitter, [self.seed, self.epoch, index], self.store.resized_hw(stem))
        item = {"embedding": self.store.embedding(stem), "box": torch.from_numpy(box),
                "target": torch.from_numpy(mask.astype(np.float32))[None], "index": index}
        return item if self.images is None else {**item, "image": self.images[case]}


class ObjectsOfSeveral(ConcatDataset):
    """The :class:`CachedObjects` of several datasets as one; ``index`` is the item's index in the whole."""

    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            part.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        return {**super().__getitem__(index), "index": index}


def split_embeddings(config: Config, split: str, run: RunContext, root: str | Path | None = None,
                     modality: str | None = None, seed: int = 0):
    """(cases with objects, their objects, EmbeddingStore) of one split of ``root`` (default
    ``config.data.root``, with ``data.modality``), embedded with ``run.model``'s encoder. Only cases
    with at least one object are embedded; ``data.max_objects_per_case`` keeps that many objects of
    a case (drawn from ``seed``), so a set of many small objects does not outweigh the others."""
    d, size = config.data, require_image_size(config)
    root, modality = (d.root, d.modality) if root is None else (root, modality)
    cases = dataset_cases(root, split, (d.val_limit or d.limit) if split == d.val_split else d.limit)
    objects, shapes = case_objects(cases, size, d.min_object_pixels, list(class_names(root)))
    if d.max_objects_per_case:
        objects = cap_objects(objects, d.max_objects_per_case, seed)
    used = sorted({c for c, _ in objects})
    if not used:
        raise InputError(f"split {split!r} of {root}: none of its {len(cases)} cases has an object of >= "
                         f"{d.min_object_pixels} pixels at {size}x{size}")
    remap = {c: i for i, c in enumerate(used)}
    cases, objects = [cases[c] for c in used], [(remap[c], mask) for c, mask in objects]
    store = embeddings_main_first(run, cases, label=f"{Path(root).resolve().name}-{split}", modality=modality)
    for i, c in enumerate(used):  # each pair checked before training, without reading the image again
        store.check_mask(cases[i], shapes[c])
    return cases, objects, store


def cap_objects(objects: list[tuple[int, np.ndarray]], cap: int, seed: int) -> list[tuple[int, np.ndarray]]:
    """At most ``cap`` objects per case index, a random subset (from ``seed``) where a case has more."""
    rng = np.random.default_rng(seed)
    by_case: dict[int, list[int]] = {}
    for i, (c, _) in enumerate(objects):
        by_case.setdefault(c, []).append(i)
    keep = sorted(i for ids in by_case.values()
                  for i in (ids if len(ids) <= cap else rng.choice(ids, cap, replace=False).tolist()))
    return [objects[i] for i in keep]


def embeddings_main_first(run: RunContext, cases: list[Case], *, model: torch.nn.Module | None = None,
                          **kwargs) -> EmbeddingStore:
    """:func:`build_embeddings` of ``cases`` with ``model`` (default the run's) in the run's cache:
    under torchrun the main process computes them (with a progress bar), the others wait at a
    barrier and then read them. ``kwargs``: label, modality."""
    model = run.model if model is None else model
    common = dict(cache_dir=run.cache_dir, device=run.device, **kwargs)
    if run.dist.is_main:
        store = build_embeddings(model, cases, progress=run.progress, **common)
    ddp.barrier(run.dist)
    if not run.dist.is_main:
        store = build_embeddings(model, cases, progress=False, **common)
    return store


@register_objective("supervised_cached")
class CachedSupervisedObjective(PromptedObjective):
    """Prompted fine-tuning of the prompt encoder / mask decoder on cached embeddings."""

    trainable, trains = FROZEN_ENCODER + ("conv_branch",), "needs a frozen image encoder"

    def __init__(self, config: Config) -> None:
        if config.data.augment:
            raise InputError("objective 'supervised_cached' trains on embeddings computed once, so it cannot "
                             "augment the images: set data.augment: false, or use objective 'supervised'")
        super().__init__(config)

    def make_datasets(self, run: RunContext) -> tuple[Dataset, Dataset | None]:
        """The train and val objects of ``data.root``, or of every task of ``data.tasks`` together."""
        d = self.config.data
        branch = getattr(getattr(run.model, "peft", None), "branch", None)  # a conv branch reads the images
        if run.model.uses_features and (branch is None or branch.adds_to is not None):
            raise InputError(f"model {self.config.model.name!r} has a high-resolution mask head that reads the "
                             f"encoder's stride-4/8 maps, which cached embeddings lack: use objective 'supervised'")
        sources = self.sources()
        seed, size = self.config.train.seed, require_image_size(self.config)

        def split(name: str, jitter: float, roots) -> Dataset:
            parts = []
            for k, (root, modality) in enumerate(roots):
                cases, objects, store = split_embeddings(self.config, name, run, root, modality, seed)
                images = PreparedImages(cases, size, modality) if branch is not None else None
                parts.append(CachedObjects(cases, objects, store, jitter, seed + k, images))
            return parts[0] if len(parts) == 1 else ObjectsOfSeveral(parts)

        # a dataset of several without a split file trains only: its every split is all of it
        held_out = [s for s in sources if len(sources) == 1 or open_dataset(s[0]).has_split_file]
        val = split(d.val_split, 0.0, held_out) if d.val_split and held_out else None
        return split(d.train_split, d.box_jitter, sources), val

    def sources(self) -> list[tuple[str | Path, str | None]]:
        """(root, intensity window) of each dataset trained on: ``data.root``, or the tasks of ``data.tasks``
        (all, or those named in ``data.task_names``)."""
        d = self.config.data
        if not d.tasks:
            if d.task_names:
                raise InputError("config key 'data.task_names' needs 'data.tasks' (a task file)")
            return [(d.root, d.modality)]
        if d.root:
            raise InputError("config keys 'data.root' and 'data.tasks' exclude each other: name the datasets "
                             "in one place")
        from medseg.data.tasks import load_tasks

        tasks = load_tasks(d.tasks)
        unknown = [n for n in d.task_names if n not in tasks]
        if unknown:
            raise InputError(f"config key 'data.task_names': {unknown} not in {d.tasks} (it has {', '.join(tasks)})")
        return [(tasks[n].root, tasks[n].normalisation) for n in (d.task_names or list(tasks))]

    def encoded(self, encode, batch: dict, model):
        """The cached embedding (B, 256, E, E), and a conv branch's maps of the batch's images (or None)."""
        return batch["embedding"], (model.peft.branch(batch["image"]) if "image" in batch else None)
