"""Objective "volume_prompts": a promptable 3D head (:mod:`medseg.models.prompt3d`) from cached slice embeddings.

The 2D encoder is frozen, so each volume's slice embeddings are computed once (with the encoder engine
of ``train.encoder_engine`` / ``train.encoder_precision``, exactly as :class:`~medseg.infer.volume_prompts.VolumePredictor`
computes them) and cached on disk; training then runs only the head.

* objects: per volume and foreground class, the class's largest 3D connected component;
* item (drawn from (seed, epoch, index)): an object, a crop of the token grid around it (random margins of
  2-10 cells in-plane and 2-12 slices), the crop's cached embeddings, image and target on the decoder's
  grid (the object's fraction of each cell), and the first prompt: a click at a random fairly deep voxel
  or a 3D box with up to 10% jitter (``train.first_prompt``: point, box or mixed); where slices are thin
  (the head's slice pooling is 2), half the crops get every other slice's embeddings replaced by the
  interpolation of their neighbours', as :class:`~medseg.infer.volume_prompts.VolumePredictor` encodes
  such volumes, and validation always does (the whole grid, exactly as inference);
* loss: 0 to ``train.click_rounds`` rounds without gradients (each adds one click into the largest
  error region, :func:`~medseg.data.prompt_sim3d.sample_click_3d`, with the previous logits as the mask
  prompt), then one round whose logits get Dice + BCE against the target;
* validation: every object of the val volumes whole, one deepest-voxel click then two corrective clicks;
  the mean of the Dice after the first and after the third click, on the decoder's grid.

Config: ``model.name: litemedsam-3d``, ``model.trainable: volume_head``, ``data.tasks`` (3D sets, e.g.
``configs/volumes_3d.yaml``) with ``data.task_names``; see ``configs/prompt3d.yaml``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from medseg.data.cases import load_case
from medseg.data.datasets import dataset_cases
from medseg.data.masks import dice, largest_component
from medseg.data.preprocess import longest_side_shape
from medseg.data.prompt_sim3d import box_3d, deepest_voxel, sample_click_3d
from medseg.data.tasks import load_tasks
from medseg.errors import InputError
from medseg.infer.predictor import Predictor
from medseg.infer.volume import window_volume
from medseg.infer.volume_prompts import encode_slices, encoded_slices, interpolate_slices, volume_window
from medseg.io.outputs import write_bytes
from medseg.models.prompt3d import Promptable3D, SliceGrid, prompt_maps
from medseg.train.config import Config
from medseg.train.datasets import EpochDraws
from medseg.train.embeddings import encoder_fingerprint, file_digest, preprocess_fingerprint
from medseg.train.objectives import Objective, RunContext, register_objective

FORMAT = 1
INTERPOLATED_SHARE = 0.5  # of the training crops of thin-slice volumes that see interpolated slices


def slice_embeddings(predictor: Predictor, tag: str, image_path: Path, scaled: np.ndarray, window: str,
                     folder: Path, progress: bool = True) -> Path:
    """The cached (Z, 256, E, E) float16 slice embeddings of a (Z, Y, X) volume windowed by ``window``:
    computed once per (encoder ``tag``, preprocessing, window, file bytes) into ``folder`` (written
    atomically), then read from there."""
    size = predictor.model.image_size
    key = hashlib.sha256(json.dumps([FORMAT, tag, preprocess_fingerprint(size, window), file_digest(image_path)],
                                    sort_keys=True).encode()).hexdigest()[:20]
    path = folder / f"{image_path.name.split('.')[0]}-{key}.safetensors"
    if not path.exists():
        embeddings = encode_slices(predictor.model, scaled, size, progress)
        write_bytes(path, save({"embeddings": embeddings.half().contiguous()}))
    return path


@dataclass
class VolumeObject:
    """One object of a cached volume: its embeddings file, grid, image and target on the decoder's grid."""

    stem: str
    task: str
    embeddings: Path
    grid: SliceGrid
    image: torch.Tensor   # (Z, 2E, 2E) in 0..1
    target: torch.Tensor  # (Z, 2E, 2E) the object's fraction of each cell

    def fine_spacing(self) -> tuple[float, float, float]:
        return (self.grid.spacing[0], 2 * self.grid.pixel_mm[0], 2 * self.grid.pixel_mm[1])


def load_objects(tasks: list, split: str, predictor: Predictor, tag: str, folder: Path, limit: int | None,
                 progress: bool) -> list[VolumeObject]:
    """Every object (largest component of each class) of ``split`` of each 3D task, embeddings cached."""
    objects = []
    cases = [(task, case) for task in tasks for case in dataset_cases(task.root, split, limit)]
    for task, case in tqdm(cases, desc=f"{split} volumes", unit="volume", disable=not progress, leave=False):
        image, label = load_case(case)
        if image.array.shape[0] != 1 or len(image.spatial_shape) != 3 or image.spatial_shape[0] < 2:
            raise InputError(f"{case.image_path}: objective 'volume_prompts' needs single-channel 3D volumes")
        window = volume_window(task.window)
        scaled = window_volume(image.array[0], window)
        path = slice_embeddings(predictor, tag, Path(case.image_path), scaled, window, folder, progress)
        size = predictor.model.image_size
        grid = SliceGrid(scaled.shape, image.meta.spacing, size, longest_side_shape(scaled.shape[1:], size))
        fine_image = grid.to_fine(torch.from_numpy(scaled) / 255.0).half()
        for class_id in sorted(set(np.unique(label.array).tolist()) - {0}):
            component = largest_component(label.array == class_id)
            if component is None:
                continue
            target = grid.to_fine(torch.from_numpy(component), mode="area")
            if (target > 0.5).sum() < 8:
                continue
            objects.append(VolumeObject(f"{case.stem}:{class_id}", task.name, path, grid, fine_image, target.half()))
    if not objects:
        raise InputError(f"no objects in the {split!r} split of {', '.join(t.name for t in tasks)}")
    return objects


def _crop_bounds(target: torch.Tensor, rng: np.random.Generator | None, tokens: int) -> tuple[slice, slice, slice]:
    """Token-grid slices (z, y, x) around an object's cells, with random margins (none without rng: the
    whole grid)."""
    if rng is None:
        return slice(0, target.shape[0]), slice(0, tokens), slice(0, tokens)
    lo, hi = box_3d(target.numpy() > 0.5).reshape(2, 3)
    z0 = max(0, int(lo[0]) - int(rng.integers(2, 13)))
    z1 = min(target.shape[0], int(hi[0]) + 1 + int(rng.integers(2, 13)))
    y0, x0 = (max(0, int(v) // 2 - int(rng.integers(2, 11))) for v in lo[1:])
    y1, x1 = (min(tokens, int(v) // 2 + 1 + int(rng.integers(2, 11))) for v in hi[1:])
    return slice(z0, z1), slice(y0, y1), slice(x0, x1)


class PromptedVolumes(EpochDraws):
    """``count`` random crops of the objects a epoch (module docstring); ``set_epoch`` redraws them. Each draw
    picks a task first, then one of its objects, so a task with many small volumes (msd_hippocampus: 280
    objects) does not crowd out one with a few large ones (la_heart_mri: 21)."""

    def __init__(self, objects: list[VolumeObject], count: int, seed: int, first: str) -> None:
        super().__init__(count, seed)
        self.first = first
        self.by_task: list[list[VolumeObject]] = []
        for task in dict.fromkeys(obj.task for obj in objects):
            self.by_task.append([obj for obj in objects if obj.task == task])

    def __getitem__(self, index: int) -> dict:
        rng = self.draw(index)
        group = self.by_task[int(rng.integers(len(self.by_task)))]
        return {**object_item(group[int(rng.integers(len(group)))], rng, self.first), "index": index}


def object_item(obj: VolumeObject, rng: np.random.Generator | None, first: str) -> dict:
    """One training (rng) or validation (no rng: the whole grid, deepest click) item of ``obj``."""
    e = obj.grid.tokens
    zs, ys, xs = _crop_bounds(obj.target, rng, e)
    fine = (zs, slice(2 * ys.start, 2 * ys.stop), slice(2 * xs.start, 2 * xs.stop))
    with safe_open(str(obj.embeddings), "pt") as f:
        embeddings = f.get_slice("embeddings")[zs, :, ys, xs].float()
    if obj.grid.slice_pool > 1 and (rng is None or rng.random() < INTERPOLATED_SHARE):
        embeddings = _as_encoded(embeddings, zs.start, obj.grid.shape[0], obj.grid.slice_pool)
    embeddings = embeddings.permute(1, 0, 2, 3)
    target = obj.target[fine].float()
    mode = first if first != "mixed" else ("point" if rng is None or rng.random() < 0.5 else "box")
    points, labels, box = torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(6)
    if mode == "point":
        points = _fine_to_tokens(torch.tensor([deepest_voxel(target.numpy() > 0.5, obj.fine_spacing(), rng)]))
        labels = torch.ones(1, dtype=torch.long)
    else:
        corners = torch.from_numpy(box_3d(target.numpy() > 0.5, 0.1 if rng is not None else 0.0, rng)).float()
        box = _fine_to_tokens(corners.reshape(2, 3)).reshape(6)
    return {"embeddings": embeddings, "image": obj.image[fine].float()[None], "target": target[None],
            "points": points, "labels": labels, "box": box, "has_box": torch.tensor(mode == "box"),
            "cell_mm": torch.tensor(obj.grid.cell_mm), "fine_mm": torch.tensor(obj.fine_spacing()),
            "slice_pool": torch.tensor(obj.grid.slice_pool)}


def _as_encoded(embeddings: torch.Tensor, z0: int, slices: int, step: int) -> torch.Tensor:
    """(Z', C, E', E') embeddings of slices ``z0 .. z0 + Z'`` of a ``slices``-slice volume -> the same crop
    as ``encode_slices(..., step)`` makes it for the whole volume: the slices it does not encode are the
    linear interpolation of the nearest encoded ones (inside the crop; at its ends, the crop's own slice)."""
    whole = encoded_slices(slices, step)
    kept = sorted({0, len(embeddings) - 1} | {z - z0 for z in whole if z0 <= z < z0 + len(embeddings)})
    return interpolate_slices(embeddings[kept], kept, len(embeddings))


def _fine_to_tokens(zyx: torch.Tensor) -> torch.Tensor:
    """(K, 3) cells (z, y, x) of the decoder's x2 grid (of a crop) -> token-grid coordinates of the crop."""
    return torch.stack([zyx[:, 0].float(), (zyx[:, 1] + 0.5) / 2 - 0.5, (zyx[:, 2] + 0.5) / 2 - 0.5], 1)


def decode_rounds(head, item: dict, rounds: int, rng: np.random.Generator | None, grad_last: bool = True,
                  ) -> list[torch.Tensor]:
    """Run ``rounds`` + 1 prompts on one item (batch of 1): the first prompt, then one corrective click each
    round; only the last round keeps gradients (with ``grad_last``). Returns each round's (1, 1, Z, 2E', 2E')
    logits."""
    device = next(head.parameters()).device
    emb = item["embeddings"].to(device)
    features = head.adapt(emb)
    shape = tuple(emb.shape[2:])
    points, labels = item["points"][0], item["labels"][0]
    box = item["box"][0] if bool(item["has_box"][0]) else None
    cell_mm, pool = tuple(item["cell_mm"][0].tolist()), int(item["slice_pool"][0])
    target = item["target"][0, 0].numpy() > 0.5
    previous, out = None, []
    for r in range(rounds + 1):
        maps = prompt_maps(shape, cell_mm, points, labels, box,
                           None if previous is None else F.avg_pool2d(previous[0], 2)[0])
        prev = torch.zeros_like(item["image"]) if previous is None else previous
        with torch.set_grad_enabled(grad_last and r == rounds and torch.is_grad_enabled()):
            logits = head.decode(features, maps[None].to(device), item["image"].to(device), prev.to(device), pool)
        out.append(logits)
        if r < rounds:
            click = sample_click_3d(target, (logits[0, 0] > 0).cpu().numpy(), tuple(item["fine_mm"][0].tolist()), rng)
            if click is None:
                click = (*deepest_voxel(target, tuple(item["fine_mm"][0].tolist()), rng), 1)
            points = torch.cat([points, _fine_to_tokens(torch.tensor([click[:3]]))])
            labels = torch.cat([labels, torch.tensor([click[3]])])
            previous = logits.detach().float().cpu()
    return out


@register_objective("volume_prompts")
class VolumePromptObjective(Objective):
    """Clicks and boxes in volumes: the 3D head from cached slice embeddings, Dice + BCE."""

    trainable, trains = ("volume_head",), "trains the promptable 3D head on the frozen 2D encoder"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if config.train.batch_size != 1:
            raise InputError("objective 'volume_prompts' takes one crop per step (crops differ in size): set "
                             "train.batch_size: 1 (and optim.accumulate for a larger effective batch)")
        self.val_objects: list[VolumeObject] = []

    def make_datasets(self, run: RunContext) -> tuple[Dataset, Dataset | None]:
        model, c = run.model, self.config
        if not isinstance(model, Promptable3D):
            raise InputError(f"objective 'volume_prompts' trains a promptable 3D model (model.name: litemedsam-3d), "
                             f"not {c.model.name!r}")
        if not c.data.tasks:
            raise InputError("objective 'volume_prompts' reads 3D datasets from a task file: set data.tasks "
                             "(e.g. configs/volumes_3d.yaml)")
        tasks = load_tasks(c.data.tasks)
        unknown = sorted(set(c.data.task_names) - set(tasks))
        if unknown:
            raise InputError(f"data.task_names {unknown} are not in {c.data.tasks}")
        tasks = [t for name, t in tasks.items() if not c.data.task_names or name in c.data.task_names]
        predictor = Predictor(model.base, "cpu" if c.train.encoder_engine != "torch" else run.device,
                              engine=c.train.encoder_engine, precision=c.train.encoder_precision)
        tag = json.dumps([encoder_fingerprint(model.base), c.train.encoder_engine, c.train.encoder_precision])
        folder = run.cache_dir / "volume-slices"
        train = load_objects(tasks, c.data.train_split, predictor, tag, folder, c.data.limit, run.progress)
        dataset = PromptedVolumes(train, c.data.patches_per_epoch, c.train.seed, c.train.first_prompt)
        if not c.data.val_split:
            return dataset, None
        self.val_objects = load_objects(tasks, c.data.val_split, predictor, tag, folder,
                                        c.data.val_limit or c.data.limit, run.progress)
        return dataset, _Indices(len(self.val_objects))

    def loss(self, forward: Callable, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.config.train.seed, self.epoch, int(batch["index"][0]), 1])
        rounds = int(rng.integers(0, self.config.train.click_rounds + 1))
        logits = forward(lambda f: decode_rounds(f.model.volume_head, batch, rounds, rng)[-1]).float()
        target = batch["target"].to(logits.device)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        prob = torch.sigmoid(logits)
        soft_dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
        t = self.config.train
        return t.pixel_weight * bce + t.dice_weight * soft_dice, {"bce": bce.detach(), "dice": soft_dice.detach()}

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, loader) -> dict[str, float]:
        """Dice after 1 and 3 clicks from the deepest voxel, averaged per task and then over the tasks (as
        crops are drawn), so a task with many small volumes does not outvote the rest."""
        first, third = {}, {}
        for obj in self.val_objects:
            item = {k: v[None] for k, v in object_item(obj, None, "point").items()}
            rounds = decode_rounds(model.volume_head, item, 2, None)
            target = item["target"][0, 0] > 0.5
            first.setdefault(obj.task, []).append(dice((rounds[0][0, 0] > 0).cpu(), target))
            third.setdefault(obj.task, []).append(dice((rounds[2][0, 0] > 0).cpu(), target))
        if not first:
            return {"dice": 0.0}
        one = float(np.mean([np.mean(v) for v in first.values()]))
        three = float(np.mean([np.mean(v) for v in third.values()]))
        per_task = {f"dice_1click_{task}": float(np.mean(v)) for task, v in first.items()}
        return {"dice": (one + three) / 2, "dice_1click": one, "dice_3clicks": three, **per_task}


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"index": index}
