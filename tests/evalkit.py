"""Helpers of the evaluation tests: tiny PNG datasets and a fake predictor (imported by tests)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image


class BoxFillPredictor:
    """Fake predictor: a box prompt predicts the box filled (inclusive); a click a 7x7 square.

    Records every call so tests can check batching and prompt shapes.
    """

    def __init__(self, fail_on: int | None = None):
        self.shape: tuple[int, int] | None = None
        self.calls: list[dict] = []
        self.set_images = 0
        self.fail_on = fail_on  # image width that makes predict raise

    def set_image(self, image: np.ndarray) -> None:
        self.shape = image.shape[:2]
        self.set_images += 1

    def predict(self, box=None, points=None, point_labels=None, multimask=False):
        self.calls.append({"box": box, "points": points, "point_labels": point_labels})
        height, width = self.shape
        if width == self.fail_on:
            raise RuntimeError("model exploded")
        n = len(box) if box is not None else len(points)
        masks = np.zeros((n, 1, height, width), dtype=bool)
        for i in range(n):
            if box is not None:
                x0, y0, x1, y1 = (int(v) for v in box[i])
            else:
                x, y = (int(v) for v in points[i, 0])
                x0, y0, x1, y1 = x - 3, y - 3, x + 3, y + 3
            masks[i, 0, max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
        scores = np.ones((n, 1), dtype=np.float32)
        return SimpleNamespace(masks=masks, scores=scores, logits=np.zeros((n, 1, 256, 256), np.float32))


def write_case(root: Path, stem: str, mask: np.ndarray, image: np.ndarray | None = None, suffix=".png") -> None:
    """Write images/<stem><suffix> (gray gradient unless given) and masks/<stem>.png (uint8)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    if image is None:
        image = np.tile(np.linspace(0, 255, mask.shape[1], dtype=np.uint8), (mask.shape[0], 1))
    Image.fromarray(image).save(root / "images" / f"{stem}{suffix}")
    Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{stem}.png")


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def rectangle(shape=(64, 80), y=(10, 30), x=(15, 50), value=255) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[y[0] : y[1], x[0] : x[1]] = value
    return mask


def disc(shape=(64, 64), centre=(32, 32), radius=20, value=255) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius**2).astype(np.uint8) * value


def prompt_masks(shape, box=None, points=None, point_labels=None, radius: int = 5) -> np.ndarray:
    """What the fake interactive predictors answer, (N, 1, H, W) bool, each object on its own: its box
    filled (inclusive), then each click a disc of ``radius`` set to the click's label (a negative one
    removes)."""
    n = len(box) if box is not None else len(points)
    masks = np.zeros((n, 1, *shape), dtype=bool)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(n):
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box[i])
            masks[i, 0, y0:y1 + 1, x0:x1 + 1] = True
        if points is not None:
            for (x, y), label in zip(points[i], point_labels[i]):
                masks[i, 0][(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = bool(label)
    return masks
