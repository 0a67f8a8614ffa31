"""Helpers of the training tests (imported by name, like tests/eval/evalkit.py): a tiny synthetic
dataset writer and the --set values of a seconds-long run of the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

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
