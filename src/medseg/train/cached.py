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
(decoder, prompt_decoder or encoder_frozen).

The cache folder is ``train.cache_dir`` (``medseg train`` fills it from ``$MEDSEG_EMBEDDING_CACHE``;
default ``~/.cache/medseg/embeddings``); only cases with an object are embedded. ``data.cache`` has
no effect here: items read memory-mapped shards.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data.cases import Case
from medseg.data.datasets import class_names, dataset_cases
from medseg.data.masks import frame_objects
from medseg.data.preprocess import label_frame
from medseg.data.prompts import object_box
from medseg.errors import InputError
from medseg.io import read_label
from medseg.train import ddp
from medseg.train.config import Config
from medseg.train.embeddings import EmbeddingStore, build_embeddings
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


class CachedObjects(Dataset):
    """One item per object, its image's embedding read from an :class:`EmbeddingStore`.

    ``dataset[i]`` -> ``{"embedding": (256, E, E), "box": (4,), "target": (1, S, S), "index": i}``.
    """

    def __init__(self, cases: list[Case], objects: list[tuple[int, np.ndarray]], store: EmbeddingStore,
                 box_jitter: float = 0.0, seed: int = 0) -> None:
        self.cases, self.store, self.box_jitter, self.seed, self.epoch = cases, store, box_jitter, seed, 0
        self.items = [(cases[c].stem, np.packbits(mask), mask.shape) for c, mask in objects]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        stem, packed, shape = self.items[index]
        mask = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        box = object_box(mask, self.box_jitter, [self.seed, self.epoch, index], self.store.resized_hw(stem))
        return {"embedding": self.store.embedding(stem), "box": torch.from_numpy(box),
                "target": torch.from_numpy(mask.astype(np.float32))[None], "index": index}


def split_embeddings(config: Config, split: str, run: RunContext):
    """(cases with objects, their objects, EmbeddingStore) of one split of ``config.data.root``,
    embedded with ``run.model``'s encoder. Only cases with at least one object are embedded."""
    d, size = config.data, require_image_size(config)
    cases = dataset_cases(d.root, split, (d.val_limit or d.limit) if split == d.val_split else d.limit)
    objects, shapes = case_objects(cases, size, d.min_object_pixels, list(class_names(d.root)))
    used = sorted({c for c, _ in objects})
    if not used:
        raise InputError(f"split {split!r} of {d.root}: none of its {len(cases)} cases has an object of >= "
                         f"{d.min_object_pixels} pixels at {size}x{size}")
    remap = {c: i for i, c in enumerate(used)}
    cases, objects = [cases[c] for c in used], [(remap[c], mask) for c, mask in objects]
    store = embeddings_main_first(run, cases, label=f"{Path(d.root).resolve().name}-{split}", modality=d.modality)
    for i, c in enumerate(used):  # each pair checked before training, without reading the image again
        store.check_mask(cases[i], shapes[c])
    return cases, objects, store


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

    def __init__(self, config: Config) -> None:
        if config.model.trainable not in FROZEN_ENCODER:
            raise InputError(f"config key 'model.trainable': objective 'supervised_cached' needs a frozen image "
                             f"encoder ({', '.join(FROZEN_ENCODER)}), got {config.model.trainable!r}")
        super().__init__(config)

    def make_datasets(self, run: RunContext) -> tuple[CachedObjects, CachedObjects | None]:
        d = self.config.data
        if run.model.uses_features:
            raise InputError(f"model {self.config.model.name!r} has a high-resolution mask head that reads the "
                             f"encoder's stride-4/8 maps, which cached embeddings lack: use objective 'supervised'")
        cases, objects, store = split_embeddings(self.config, d.train_split, run)
        train = CachedObjects(cases, objects, store, d.box_jitter, self.config.train.seed)
        val = None
        if d.val_split:
            cases, objects, vstore = split_embeddings(self.config, d.val_split, run)
            val = CachedObjects(cases, objects, vstore, 0.0, self.config.train.seed)
        return train, val

    def encoded(self, encode, batch: dict):
        """The cached embedding (B, 256, E, E); no encoder features."""
        return batch["embedding"], None
