"""Objective "distill": decoupled distillation (MobileSAM / LiteMedSAM / HRMedSeg).

The student's image encoder learns to reproduce the teacher's image embedding of the same image;
the student then uses the teacher's prompt encoder and mask decoder unchanged, so it is promptable
as soon as its embedding is close enough. Only ``image_encoder`` trains (``model.trainable: encoder``);
before the first step the student takes the teacher's prompt encoder and mask decoder (``prepare_model``).

* images: every folder of ``distill.sources``. A folder with a dataset layout (images/ + masks/ +
  splits.json, nnU-Net, ...) gives its train split; any other folder gives every image file under it
  (unlabelled images). Masks are never read.
* item: ``{"image": (3, S, S) float32 in [0, 1], the student's input frame (resize longest side to S,
  pad bottom/right: the predictor's preprocessing), "teacher": (256, E, E) the teacher's embedding,
  "index": i}``.
* teacher targets: with ``distill.cache_teacher`` (default) the teacher encodes each image once at its
  own size (256 for LiteMedSAM, exactly as ``Predictor.set_image``), cached on disk like the
  fine-tuning embeddings (:mod:`medseg.train.embeddings`). With ``data.augment`` the student sees
  flipped / rotated / intensity-changed images, so the teacher runs on the fly on the same augmented
  frame shrunk to its size (antialiased), and no cache is used: cheap on a GPU, slow on a CPU.
* loss: MSE between embeddings + ``distill.cosine_weight`` x (1 - cosine similarity of the 256-vectors
  at each position). The student's embedding grid must equal the teacher's (1024 / 16 = 256 / 4 = 64).
* validation: box-prompted Dice of the student with the (teacher's) decoder on the val split of each
  ``distill.val_sources`` dataset (first ``val_limit`` cases), the "supervised" objective's measure;
  it selects ``best.*``. No val sources: only ``latest.*`` is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, Dataset

from medseg.errors import InputError
from medseg.data.cases import Case
from medseg.data.datasets import dataset_cases, source_cases
from medseg.data.preprocess import prepare_image
from medseg.train.config import Config
from medseg.data.augment import train_augmentation
from medseg.train.datasets import PromptedObjects
from medseg.train.cached import embeddings_main_first
from medseg.train.embeddings import EmbeddingStore, load_plane
from medseg.train.objectives import Objective, RunContext, SupervisedObjective, register_objective, require_image_size

def encoder_only(path: str | Path) -> bool:
    """Whether a checkpoint holds only ``image_encoder.*`` tensors (all a teacher needs to distil)."""
    from medseg.models.weights import load_state_dict

    return all(k.startswith("image_encoder.") for k in load_state_dict(Path(path)))


class DistillImages(Dataset):
    """Images of several sources for the student, with the teacher's cached embeddings if given.

    ``dataset[i]`` -> ``{"image": (3, S, S), "teacher": (256, E, E) (cached mode only), "index": i}``.
    """

    def __init__(self, sources: list[list[Case]], size: int, stores: list[EmbeddingStore] | None = None,
                 augment: bool = False, seed: int = 0, modality: str | None = None) -> None:
        self.items = [(s, case) for s, cases in enumerate(sources) for case in cases]
        self.size, self.stores, self.seed, self.modality, self.epoch = size, stores, seed, modality, 0
        self.augmentation = train_augmentation() if augment else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        s, case = self.items[index]
        x, _ = prepare_image(load_plane(case.image_path), self.size, self.modality)
        image = x[0]
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index, 2])
            blank = np.zeros(image.shape[1:], dtype=np.uint8)
            out = self.augmentation({"image": image.numpy(), "mask": blank}, rng)
            image = torch.from_numpy(np.ascontiguousarray(out["image"], dtype=np.float32))
        item: dict[str, torch.Tensor | int] = {"image": image, "index": index}
        if self.stores is not None:
            item["teacher"] = self.stores[s].embedding(case.stem)
        return item


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor,
                      cosine_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MSE + cosine_weight * (1 - cos) between (B, C, E, E) embeddings; returns the loss and its parts."""
    if student.shape != teacher.shape:
        raise InputError(f"student embedding {tuple(student.shape)} and teacher embedding {tuple(teacher.shape)} "
                         f"differ: the student's input side / 16 must equal the teacher's side / 4")
    student, teacher = student.float(), teacher.float()
    mse = F.mse_loss(student, teacher)
    parts = {"mse": mse.detach()}
    loss = mse
    if cosine_weight > 0:
        cosine = 1 - F.cosine_similarity(student, teacher, dim=1).mean()
        loss = loss + cosine_weight * cosine
        parts["cosine"] = cosine.detach()
    return loss, parts


@register_objective("distill")
class DistillObjective(Objective):
    """Student image encoder <- teacher embedding; validated by the student's box-prompted Dice."""

    trainable, trains = ("encoder",), "trains the image encoder only"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if not config.distill.sources:
            raise InputError("config key 'distill.sources' is empty: list image folders (datasets or plain folders)")
        self.cfg = config.distill
        self.teacher = self._teacher(config)
        self.supervised = SupervisedObjective(config) if config.distill.val_sources else None  # box Dice

    @staticmethod
    def _teacher(config: Config) -> torch.nn.Module:
        from medseg.models import build_model, list_models
        from medseg.models.build import load_encoder_weights

        cfg = config.distill
        if cfg.teacher not in list_models():
            raise InputError(f"config key 'distill.teacher': unknown model {cfg.teacher!r}; available: "
                             f"{', '.join(list_models())}")
        if cfg.teacher_checkpoint is not None and encoder_only(cfg.teacher_checkpoint):
            teacher = build_model(cfg.teacher)
            load_encoder_weights(teacher, cfg.teacher_checkpoint)
        else:
            teacher = build_model(cfg.teacher, pretrained=cfg.teacher_checkpoint is None,
                                  checkpoint=cfg.teacher_checkpoint, weights=config.model.weights)
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher.eval()

    @staticmethod
    def _source(folder: str | Path, limit: int | None) -> list[Case]:
        try:
            return source_cases(folder, "train", limit)
        except InputError as exc:
            raise InputError(f"config key 'distill.sources': {exc}") from None

    def make_datasets(self, run: RunContext) -> tuple[DistillImages, Dataset | None]:
        config, cfg = self.config, self.cfg
        d, size = config.data, require_image_size(config)
        sources = [self._source(folder, cfg.limit) for folder in cfg.sources]
        stores = None
        if cfg.cache_teacher and not d.augment:
            teacher = self.teacher.to(run.device)
            stores = [embeddings_main_first(run, cases, model=teacher, label=f"teacher-{Path(folder).resolve().name}",
                                            modality=d.modality) for folder, cases in zip(cfg.sources, sources)]
            self.teacher.cpu()
        train = DistillImages(sources, size, stores, d.augment, config.train.seed, d.modality)
        val = None
        if cfg.val_sources:
            parts = [PromptedObjects(dataset_cases(root, d.val_split or "val", cfg.val_limit), size,
                                     d.min_object_pixels, 0.0, config.train.seed, d.modality, d.cache,
                                     what=f"val split of {root}") for root in cfg.val_sources]
            val = ConcatDataset(parts)
        return train, val

    def prepare_model(self, student: torch.nn.Module) -> None:
        """Give the student the teacher's prompt encoder and mask decoder (its fusion head stays as built,
        a no-op until fine-tuned), so every checkpoint of the run is promptable as it stands."""
        from medseg.models.build import DECODER_PARTS, _load_parts

        grid, teacher_grid = student.prompt_encoder.embedding_size, self.teacher.prompt_encoder.embedding_size
        if grid != teacher_grid:
            raise InputError(f"the student makes a {grid[0]}x{grid[1]} embedding, teacher {self.cfg.teacher!r} a "
                             f"{teacher_grid[0]}x{teacher_grid[1]} one: the student's input side / 16 must equal the "
                             f"teacher's side / 4 (choose a student of another input size)")
        _load_parts(student, self.teacher.state_dict(), DECODER_PARTS,
                    f"teacher {self.cfg.teacher!r}: its prompt encoder / mask decoder do not fit the student")

    def _teacher_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's embedding of the student's frames, shrunk to the teacher's input side."""
        teacher = self.teacher.to(images.device)
        size = teacher.image_size
        small = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            return teacher.encode(small.clamp(0, 1))

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """batch: image (B, 3, S, S), teacher (B, 256, E, E) if cached -> scalar loss and its parts."""
        target = batch.get("teacher")
        if target is None:
            target = self._teacher_embedding(batch["image"])
        student = model(lambda f: f.encode(batch["image"])[0])
        return distillation_loss(student, target, self.cfg.cosine_weight)

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, loader) -> dict[str, float]:
        return self.supervised.validate(model, loader)
