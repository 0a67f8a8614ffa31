"""Helpers of the training tests (imported by name, like tests/eval/evalkit.py): a tiny synthetic
dataset writer (pictures, and NIfTI volumes of balls) and the --set values of a seconds-long run of the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

TRAIN, VAL = 6, 2


def write_dataset(root: Path, train: int = TRAIN, val: int = VAL, seed: int = 0) -> Path:
    """``train + val`` RGB pictures 48 wide x 40 high with one or two bright blobs, 0/255 masks."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:40, :48]
    stems = [f"case{i}" for i in range(train + val)]
    for i, stem in enumerate(stems):
        mask = np.zeros((40, 48), dtype=bool)
        for _ in range(1 + i % 2):
            cy, cx, r = rng.integers(8, 32), rng.integers(8, 40), rng.integers(4, 8)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image = rng.integers(0, 90, (40, 48, 3)).astype(np.uint8)
        image[mask] = rng.integers(150, 255, (int(mask.sum()), 3))
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")
    (root / "splits.json").write_text(json.dumps({"train": stems[:train], "val": stems[train:]}))
    return root


def tiny_overrides(root: Path, **extra) -> list[str]:
    """--set values of a 2-epoch CPU run of litemedsam-tiny on ``root`` (plus ``section.key=value`` extras)."""
    values = {"data.root": str(root), "data.min_object_pixels": 4, "model.name": "litemedsam-tiny",
              "model.pretrained": False, "optim.lr": 1e-3, "optim.warmup_steps": 1, "train.epochs": 2,
              "train.batch_size": 2, "train.device": "cpu", "train.amp": "off", "train.progress": False,
              "train.log_every": 1}
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in values.items()]


def write_two_class_dataset(root: Path, train: int = 6, val: int = 2, seed: int = 1) -> Path:
    """Grey pictures 40 x 48 with a disc (label 1) holding a brighter cup (label 2), like the optic
    disc and cup of a fundus set; masks hold the ids 0/1/2."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:40, :48]
    stems = [f"eye{i}" for i in range(train + val)]
    for stem in stems:
        cy, cx, r = int(rng.integers(14, 26)), int(rng.integers(14, 34)), int(rng.integers(8, 12))
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        mask = np.where(d2 <= r * r, 1, 0).astype(np.uint8)
        mask[d2 <= (r // 2) ** 2] = 2
        image = rng.integers(0, 60, (40, 48)).astype(np.uint8)
        image[mask == 1] = rng.integers(120, 170, int((mask == 1).sum()))
        image[mask == 2] = rng.integers(200, 255, int((mask == 2).sum()))
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    (root / "splits.json").write_text(json.dumps({"train": stems[:train], "val": stems[train:],
                                                  "test": stems[train:]}))
    return root


def write_balls(root: Path, n: int = 8, seed: int = 0) -> Path:
    """Volumes 20 x 24 x 22 (1.5 x 1 x 1 mm) holding a bright ball (class 1) with a brighter core (class 2)."""
    rng = np.random.default_rng(seed)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    stems = [f"b{i}" for i in range(n)]
    zz, yy, xx = np.indices((20, 24, 22))
    for stem in stems:
        c = rng.uniform([8, 9, 9], [12, 15, 13])
        r = np.sqrt(((zz - c[0]) * 1.5) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        label = np.where(r < 3, 2, np.where(r < 6, 1, 0)).astype(np.uint8)
        image = (40 + 60 * (label > 0) + 60 * (label == 2) + rng.normal(0, 8, label.shape)).astype(np.float32)
        affine = np.diag([1.0, 1.0, 1.5, 1.0])
        for folder, array in (("imagesTr", image), ("labelsTr", label)):
            nib.save(nib.Nifti1Image(array.transpose(2, 1, 0).copy(), affine), str(root / folder / f"{stem}.nii.gz"))
    (root / "splits.json").write_text(json.dumps({"train": stems[:6], "val": stems[6:7], "test": stems[7:]}))
    (root / "classes.json").write_text(json.dumps({"0": "background", "1": "shell", "2": "core"}))
    return root
