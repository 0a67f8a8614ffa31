"""Training data of the supervised objective: one prompted object per item, and the epoch sampler.

Cases come from :func:`medseg.data.datasets.dataset_cases`. Each item is built exactly as the
predictor sees an image:

* image: :func:`medseg.data.preprocess.prepare_image` -> (3, S, S) in [0, 1], zero-padded;
* label: resized to the same resized-and-padded frame with nearest neighbour;
* object: one connected component (8-connectivity, >= ``min_pixels`` in the model frame) of one
  foreground class of that label; every class is trained as a binary "object";
* box: the object's tight box (x0, y0, x1, y1), inclusive, in model-input pixels, optionally jittered.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medseg.errors import InputError
from medseg.data.augment import train_augmentation
from medseg.data.cases import Case, load_case, plane_2d
from medseg.data.masks import frame_objects
from medseg.data.preprocess import label_frame, prepare_image
from medseg.data.prompts import object_box


def _plane(array: np.ndarray, path: Path) -> np.ndarray:
    """(Z, Y, X) label -> (Y, X); a volume is an InputError (3D training comes with medseg.data)."""
    if array.shape[0] != 1:
        raise InputError(f"{path}: a 3D label of {array.shape[0]} slices; supervised training takes 2D cases")
    return array[0]


class PromptedObjects(Dataset):
    """One item per object of the given cases; every image/mask pair is read and checked when built
    (kept in memory with ``cache``), so a bad pair fails before training starts.

    ``dataset[i]`` -> ``{"image": (3, S, S) float32 in [0, 1], "box": (4,) float32 x0, y0, x1, y1,
    "target": (1, S, S) float32 in {0, 1}, "index": i}``. With ``box_jitter`` each box side moves by
    up to that fraction of the box's width/height, drawn from a generator seeded by (seed, epoch, i),
    so items do not depend on worker count or on what ran before (exact resume).
    """

    def __init__(self, cases: list[Case], size: int, min_pixels: int = 20, box_jitter: float = 0.0,
                 seed: int = 0, modality: str | None = None, cache: bool = True, what: str = "dataset",
                 augment: bool = False, declared: Collection[int] = ()) -> None:
        self.cases, self.size, self.min_pixels, self.declared = cases, size, min_pixels, tuple(declared)
        self.augmentation = train_augmentation() if augment else None
        self.box_jitter, self.seed, self.modality, self.epoch = box_jitter, seed, modality, 0
        self._cache: dict[int, tuple[torch.Tensor, np.ndarray, tuple[int, int]]] | None = {} if cache else None
        self.items: list[tuple[int, int]] = []  # (case index, object index within the case)
        for c in range(len(cases)):  # every pair is read and checked now, before a run folder is written
            self.items += [(c, k) for k in range(len(self._objects(c, self._frame(c)[1])))]
        if not self.items:
            raise InputError(f"{what}: none of its {len(cases)} cases has an object of >= {min_pixels} pixels at "
                             f"{size}x{size} (first case: {cases[0].mask_path if cases else 'none'})")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _frame(self, c: int) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
        """(image (3, S, S), label frame (S, S), resized (h, w)) of case ``c``, cached when asked."""
        if self._cache is not None and c in self._cache:
            return self._cache[c]
        case = self.cases[c]
        image, label = load_case(case)
        x, record = prepare_image(plane_2d(image, "supervised training"), self.size, self.modality)
        out = (x[0], label_frame(_plane(label.array, case.mask_path), self.size), record.resized_hw)
        if self._cache is not None:
            self._cache[c] = out
        return out

    def _objects(self, c: int, frame: np.ndarray) -> list[np.ndarray]:
        return frame_objects(frame, self.min_pixels, self.cases[c].mask_path, self.declared)

    def _augment(self, image: torch.Tensor, mask: np.ndarray, hw: tuple[int, int], index: int):
        """Augment image (3, S, S) and object mask (S, S) together in the padded frame, seeded by
        (seed, epoch, index); an object pushed out of the frame keeps the plain item."""
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        out = self.augmentation({"image": image.numpy(), "mask": mask.astype(np.uint8)}, rng)
        if out["mask"].sum() < self.min_pixels:
            return image, mask, hw
        size = self.size  # the content may now reach into the padding: the whole frame is valid
        return torch.from_numpy(np.ascontiguousarray(out["image"], dtype=np.float32)), out["mask"] > 0, (size, size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        c, k = self.items[index]
        image, frame, hw = self._frame(c)
        objects = self._objects(c, frame)
        if k >= len(objects):
            raise InputError(f"{self.cases[c].mask_path}: changed on disk while training (object {k} is gone)")
        mask = objects[k]
        if self.augmentation is not None:
            image, mask, hw = self._augment(image, mask, hw, index)
        return {"image": image, "box": torch.from_numpy(object_box(mask, self.box_jitter, [self.seed, self.epoch, index], hw)),
                "target": torch.from_numpy(mask.astype(np.float32))[None], "index": index}


class EpochDraws(Dataset):
    """Base of the datasets whose ``count`` items a epoch are random draws: item ``i`` of epoch ``e`` comes from
    :meth:`draw` ``(i)``, a generator seeded by ``(seed, e, i)``, so a run is reproducible and the loop's
    ``set_epoch`` redraws every item."""

    def __init__(self, count: int, seed: int) -> None:
        self.count, self.seed, self.epoch = count, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def draw(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])


class EpochSampler(Sampler[int]):
    """This process's indices of one epoch: ``randperm(n)`` from a generator seeded ``seed + epoch``,
    cut to whole global batches (``global_batch`` items), then every ``world_size``-th from ``rank``.

    Like ``DistributedSampler`` (same seeding and interleave), except that no index is padded or
    left as a short batch, so one process with batch B and N processes with B/N each see the same
    global batches in the same order. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, n: int, global_batch: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, max_batches: int | None = None) -> None:
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.world_size, self.shuffle, self.epoch = rank, world_size, shuffle, 0
        self.max_batches = max_batches  # an "epoch" of at most this many global batches (a fresh subset each epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _whole(self) -> int:
        batches = self.n // self.global_batch
        if self.max_batches is not None:
            batches = min(batches, self.max_batches)
        return batches * self.global_batch

    def __len__(self) -> int:
        return self._whole() // self.world_size

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        return iter(order[:self._whole()][self.rank::self.world_size].tolist())
