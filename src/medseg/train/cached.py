"""Objective "supervised_cached": decoder-only fine-tuning from cached image embeddings.

The image encoder is frozen, so its output for an image never changes: :mod:`medseg.train.embeddings`
computes it once per image and caches it on disk, and every epoch runs only the prompt encoder and
mask decoder (~15-150 ms instead of ~1.5-3 s per image on a 2-core CPU).

* item: ``{"embedding": (256, E, E) float32, "box": (4,) x0, y0, x1, y1 in model-input pixels,
  "target": (1, S, S) float32 {0, 1}, "index": i}``, one per object (connected component of one
  class, >= ``data.min_object_pixels`` in the S x S frame), exactly as the "supervised" objective's
  :class:`~medseg.train.datasets.PromptedObjects` (same label frame, same box, same jitter rule:
  each side moves by up to ``data.box_jitter`` of the box size, drawn from (seed, epoch, index));
* loss: Dice + BCE (or focal) of the box-prompted logits, weights from ``train.*``; with
  ``train.click_rounds`` / ``train.first_prompt`` the mean over the rounds of interactive chains
  (:mod:`medseg.train.interactive`; cheap here, every round reuses the cached embedding);
* validation: mean Dice of the val objects' box-prompted masks (no jitter) in the S x S frame
  (with click rounds: over every round of the validation chains).

It runs in the ordinary :func:`medseg.train.train` loop (configs, checkpoints, resume): the loop
builds the whole model, so the saved checkpoint is a full state dict (encoder weights unchanged)
that ``build_model(name, checkpoint=...)`` and ``medseg evaluate --checkpoint`` load. The loop
calls the model as ``model(images, boxes=...)``; with a frozen encoder, the loss hands it the cached
embeddings in place of images and makes ``encode`` the identity for that call
(:func:`embeddings_as_input`), so DDP still sees a normal forward. ``model.trainable`` must leave
the encoder frozen (decoder, prompt_decoder or encoder_frozen).

The cache folder is ``$MEDSEG_EMBEDDING_CACHE`` or ``~/.cache/medseg/embeddings``; only cases with
an object are embedded. ``data.cache`` has no effect here: items read memory-mapped shards.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medseg.errors import InputError
from medseg.eval.datasets import Case
from medseg.io import read_label
from medseg.train import ddp
from medseg.train.config import Config
from medseg.train.datasets import frame_objects, label_frame, paired_cases
from medseg.train.optim import bare_model
from medseg.train.interactive import batch_rng, interactive_loss, interactive_validation, is_interactive
from medseg.train.embeddings import EmbeddingStore, build_embeddings, default_cache_dir, encoder_fingerprint
from medseg.train.objectives import dice_scores, register_objective, segmentation_loss

FROZEN_ENCODER = ("decoder", "prompt_decoder", "encoder_frozen")


def case_objects(cases: list[Case], size: int, min_pixels: int) -> list[tuple[int, np.ndarray]]:
    """(case index, bool (S, S) object mask) of every object of ``cases`` in the model frame."""
    found = []
    for c, case in enumerate(cases):
        label = read_label(case.mask_path).array
        if label.shape[0] != 1:
            raise InputError(f"{case.mask_path}: a 3D label; cached fine-tuning takes 2D cases")
        found += [(c, mask) for mask in frame_objects(label_frame(label[0], size), min_pixels)]
    return found


def jittered_box(mask: np.ndarray, hw: tuple[int, int], jitter: float, seed: int, epoch: int,
                 index: int) -> np.ndarray:
    """Tight (x0, y0, x1, y1) box of a bool (S, S) mask, each side moved by up to ``jitter`` of the
    box size (generator seeded by (seed, epoch, index)) and clipped to the resized image (h, w)."""
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
    if jitter > 0:
        rng = np.random.default_rng([seed, epoch, index])
        side = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2)
        box += rng.uniform(-jitter, jitter, 4) * side
        box = np.clip(box, 0, [hw[1] - 1, hw[0] - 1] * 2)
        box = np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])])
    return box.astype(np.float32)


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
        box = jittered_box(mask, self.store.resized_hw(stem), self.box_jitter, self.seed, self.epoch, index)
        return {"embedding": self.store.embedding(stem), "box": torch.from_numpy(box),
                "target": torch.from_numpy(mask.astype(np.float32))[None], "index": index}


def encoder_model(config: Config) -> torch.nn.Module:
    """The model the loop will train, built the same way (same seed, so random weights match too)."""
    from medseg.models import build_model

    m = config.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = build_model(m.name, pretrained=m.pretrained and m.checkpoint is None, checkpoint=m.checkpoint)
    if m.init_encoder is not None:
        from medseg.models.build import load_encoder_weights

        load_encoder_weights(model, m.init_encoder)
    return model


def split_embeddings(config: Config, split: str, model: torch.nn.Module | None = None, progress: bool = True,
                     cache_dir: str | Path | None = None):
    """(cases with objects, their objects, EmbeddingStore) of one split of ``config.data.root``.

    Only cases with at least one object are embedded. Under torchrun the main process computes the
    cache and the others wait, then read it.
    """
    d = config.data
    size = d.image_size
    if size is None:
        raise InputError("data.image_size must be resolved (the model's input size) before making datasets")
    cases = paired_cases(d.root, split, (d.val_limit or d.limit) if split == d.val_split else d.limit)
    objects = case_objects(cases, size, d.min_object_pixels)
    used = sorted({c for c, _ in objects})
    if not used:
        raise InputError(f"split {split!r} of {d.root}: none of its {len(cases)} cases has an object of >= "
                         f"{d.min_object_pixels} pixels at {size}x{size}")
    remap = {c: i for i, c in enumerate(used)}
    cases, objects = [cases[c] for c in used], [(remap[c], mask) for c, mask in objects]
    model = model if model is not None else encoder_model(config)
    device = ddp.resolve_device(config.train.device, ddp.from_env())
    store = embeddings_main_first(model.to(device), cases, cache_dir, label=f"{Path(d.root).resolve().name}-{split}",
                                  modality=d.modality, progress=progress, device=device)
    return cases, objects, store


def embeddings_main_first(model, cases: list[Case], cache_dir: str | Path | None = None, *, progress: bool = True,
                          **kwargs) -> EmbeddingStore:
    """:func:`build_embeddings` under torchrun: the main process computes the cache (with a progress
    bar), the others wait at a barrier and then read it. ``kwargs``: label, modality, device."""
    info = ddp.from_env()
    cache_dir = cache_dir or default_cache_dir()
    if info.is_main:
        store = build_embeddings(model, cases, cache_dir, progress=progress, **kwargs)
    ddp.barrier(info)
    if not info.is_main:
        store = build_embeddings(model, cases, cache_dir, progress=False, **kwargs)
    return store


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@contextlib.contextmanager
def embeddings_as_input(segmenter: torch.nn.Module):
    """Within the block, ``segmenter.encode`` returns its input: images are embeddings."""
    segmenter.encode = _identity  # instance attribute shadows the method
    try:
        yield
    finally:
        del segmenter.encode


@register_objective("supervised_cached")
class CachedSupervisedObjective:
    """Box-prompted fine-tuning of the prompt encoder / mask decoder on cached embeddings."""

    def __init__(self, config: Config) -> None:
        from monai.losses import DiceLoss

        if config.model.trainable not in FROZEN_ENCODER:
            raise InputError(f"config key 'model.trainable': objective 'supervised_cached' needs a frozen image "
                             f"encoder ({', '.join(FROZEN_ENCODER)}), got {config.model.trainable!r}")
        self.train_cfg = config.train
        self.dice_loss = DiceLoss(sigmoid=True)
        self.encoder: str | None = None  # fingerprint of the encoder the embeddings came from
        self._checked: set[int] = set()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def make_datasets(self, config: Config) -> tuple[CachedObjects, CachedObjects | None]:
        d = config.data
        model = encoder_model(config)
        if getattr(model, "uses_features", False):
            raise InputError(f"model {config.model.name!r} has a high-resolution mask head that reads the encoder's "
                             f"stride-4/8 maps, which cached embeddings lack: use objective 'supervised'")
        cases, objects, store = split_embeddings(config, d.train_split, model)
        train = CachedObjects(cases, objects, store, d.box_jitter, config.train.seed)
        val = None
        if d.val_split:
            cases, objects, vstore = split_embeddings(config, d.val_split, model)
            val = CachedObjects(cases, objects, vstore, 0.0, config.train.seed)
        self.encoder = store.encoder
        return train, val

    def _check(self, segmenter: torch.nn.Module) -> None:
        """Once per model: its encoder must be the one that made the embeddings."""
        if self.encoder is None or id(segmenter) in self._checked:
            return
        if encoder_fingerprint(segmenter) != self.encoder:
            raise InputError("the model's image encoder differs from the one the cached embeddings were made with "
                             "(was it built with another seed or checkpoint?)")
        self._checked.add(id(segmenter))

    def loss(self, model: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch: embedding (B, 256, E, E), box (B, 4), target (B, 1, S, S) -> scalar loss and its parts."""
        segmenter = bare_model(model)
        self._check(segmenter)
        cfg = self.train_cfg
        with embeddings_as_input(segmenter):
            if is_interactive(cfg):
                rng = batch_rng(cfg.seed, self.epoch, batch["index"])
                return interactive_loss(model, batch["embedding"], batch["box"], batch["target"], cfg,
                                        self.dice_loss, rng)
            logits, _ = model(batch["embedding"], boxes=batch["box"])
        return segmentation_loss(logits, batch["target"], self.dice_loss, cfg)

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
        """Mean Dice of the box-prompted val objects (logits > 0) in the S x S frame."""
        self._check(model)
        device = next(model.parameters()).device
        if is_interactive(self.train_cfg):
            def batches():
                for batch in loader:
                    embedding = batch["embedding"].to(device)
                    decode = lambda b, p, m, e=embedding: model.decode(e, b, p, m)  # noqa: E731
                    yield decode, batch["box"].to(device), batch["target"].to(device)
            return interactive_validation(batches(), self.train_cfg)
        scores = []
        for batch in loader:
            logits, _ = model.decode(batch["embedding"].to(device), boxes=batch["box"].to(device))
            scores.append(dice_scores(logits > 0, batch["target"].to(device) > 0.5).cpu())
        dice = torch.cat(scores)
        return {"dice": float(dice.mean()), "objects": int(dice.numel())}
