"""Pictures a person looks at: an image with its masks tinted, outlined, and its prompts drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Tint colours (RGB) for object / class 1, 2, 3, ... of an overlay.
PALETTE = np.array([(255, 64, 64), (64, 200, 255), (255, 210, 0), (80, 255, 120), (200, 90, 255),
                    (255, 140, 0)], dtype=np.float32)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) image of any dtype -> uint8 (H, W, 3), min-max scaled for display
    (1st-99th percentile for images that are not 8-bit, e.g. CT, MR, 16-bit microscopy)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3]
    if np.asarray(image).dtype == np.uint8:
        return img.astype(np.uint8)
    low, high = np.percentile(img, (1, 99))
    return (np.clip((img - low) / max(high - low, 1e-8), 0, 1) * 255).astype(np.uint8)


def _draw_box(canvas: np.ndarray, box, colour, width: int) -> None:
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = np.clip([x0, x1], 0, w - 1)
    y0, y1 = np.clip([y0, y1], 0, h - 1)
    for t in range(width):
        canvas[np.clip(y0 + t, 0, h - 1), x0:x1 + 1] = colour
        canvas[np.clip(y1 - t, 0, h - 1), x0:x1 + 1] = colour
        canvas[y0:y1 + 1, np.clip(x0 + t, 0, w - 1)] = colour
        canvas[y0:y1 + 1, np.clip(x1 - t, 0, w - 1)] = colour


def _draw_point(canvas: np.ndarray, xy, colour, radius: int) -> None:
    h, w = canvas.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    canvas[(xx - xy[0]) ** 2 + (yy - xy[1]) ** 2 <= radius ** 2] = colour


def overlay(image: np.ndarray, masks: np.ndarray | list, boxes=None, points=None, point_labels=None,
            alpha: float = 0.45) -> np.ndarray:
    """Draw masks (K, H, W) (or one (H, W) label map with ids 1..K) on an image; boxes (N, 4)
    x0, y0, x1, y1 in green; positive points (x, y) green, negative red. Returns uint8 (H, W, 3)."""
    from scipy import ndimage

    canvas = display_rgb(image).astype(np.float32)
    masks = np.asarray(masks)
    if masks.ndim == 2:
        ids = [v for v in np.unique(masks) if v != 0]
        masks = np.stack([masks == v for v in ids]) if ids else np.zeros((0,) + masks.shape, bool)
    h, w = canvas.shape[:2]
    thick = max(1, round(max(h, w) / 300))
    for k, mask in enumerate(masks.astype(bool)):
        colour = PALETTE[k % len(PALETTE)]
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * colour
        edge = mask & ~ndimage.binary_erosion(mask, iterations=thick)
        canvas[edge] = colour
    if boxes is not None:
        for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            _draw_box(canvas, box, (0, 255, 0), thick)
    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labels = np.ones(len(pts)) if point_labels is None else np.asarray(point_labels).reshape(-1)
        for xy, lab in zip(pts, labels):
            _draw_point(canvas, xy, (0, 255, 0) if lab else (255, 0, 0), 2 * thick + 2)
    return canvas.astype(np.uint8)


def save_png(rgb: np.ndarray, path: str | Path, overwrite: bool = True, source: str | Path | None = None) -> Path:
    """Write a uint8 (H, W, 3) picture as PNG (the parent folder is created). Never over ``source``
    (the input it was made from), and over an existing file only with ``overwrite``."""
    from PIL import Image as PILImage

    from .io import check_output_path
    from .io.outputs import atomic_write

    path = check_output_path(path, source, overwrite)
    return atomic_write(path, lambda tmp: PILImage.fromarray(rgb).save(tmp, format="PNG"))
