"""LiteMedSAM's published inference preprocessing, as tensors.

1. intensity: CT is windowed, MR percentile-clipped (``MODALITY_WINDOWS``); other images as they are;
2. grey -> 3 channels by repetition, alpha dropped;
3. resize so the longest side is ``size`` (bilinear, anti-aliased when shrinking, which
   approximates the area resampling of the original OpenCV pipeline);
4. min-max normalise the resized image to [0, 1];
5. pad bottom/right with zeros to ``size`` x ``size``.

Prompts are scaled by the same factor ``size / max(H, W)``; logits are cropped back to the
unpadded region and resized to (H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medseg.errors import InputError

# Documented defaults per modality. ``window``: fixed (low, high) clip in the image's units
# (CT: Hounsfield, soft-tissue window level 40 / width 400). ``percentiles``: clip at these
# percentiles of the image (MR, whose units are arbitrary).
MODALITY_WINDOWS: dict[str, dict[str, tuple[float, float]]] = {
    "CT": {"window": (-160.0, 240.0)},
    "MR": {"percentiles": (0.5, 99.5)},
}


def apply_intensity_window(array: np.ndarray, modality: str | None) -> np.ndarray:
    """Clip intensities per modality (see ``MODALITY_WINDOWS``); float32 out, same shape in."""
    array = np.asarray(array, dtype=np.float32)
    rule = MODALITY_WINDOWS.get((modality or "").upper())
    if rule is None:
        return array
    if "window" in rule:
        low, high = rule["window"]
    else:
        low, high = np.percentile(array, rule["percentiles"])
    return np.clip(array, low, high)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> float32 (H, W, 3)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputError(f"expected an image of shape (H, W) or (H, W, 3|4), got {image.shape}; "
                         f"pass one 2D slice (volumes go through medseg.infer.segment_volume).")
    image = image[..., :3].astype(np.float32)
    if not np.isfinite(image).all():
        raise InputError(f"image holds {int((~np.isfinite(image)).sum())} NaN/Inf values; replace them first.")
    return image


@dataclass(frozen=True)
class Resized:
    """Where the original image lies inside the square model input."""

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.original_hw)


def longest_side_shape(hw: tuple[int, int], size: int) -> tuple[int, int]:
    h, w = hw
    scale = size / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def prepare_image(image: np.ndarray, size: int, modality: str | None = None) -> tuple[torch.Tensor, Resized]:
    """(H, W[, C]) image -> model input (1, 3, size, size) in [0, 1], and the resize record."""
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise InputError(f"image holds {int((~np.isfinite(image)).sum())} NaN/Inf values; replace them first.")
    rgb = to_rgb(apply_intensity_window(image, modality) if modality else image)
    h, w = rgb.shape[:2]
    new_hw = longest_side_shape((h, w), size)
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
    x = F.interpolate(x, size=new_hw, mode="bilinear", align_corners=False, antialias=max(h, w) > size)
    low, high = x.min(), x.max()
    x = (x - low) / torch.clamp(high - low, min=1e-8)
    x = F.pad(x, (0, size - new_hw[1], 0, size - new_hw[0]))
    return x, Resized((h, w), new_hw, size)


def logits_to_input_size(logits: torch.Tensor, record: Resized,
                         output_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, M, size, size) low-res logits -> (N, M, H, W) logits at the original resolution (or ``output_hw``,
    a grid of another size over the same image)."""
    h, w = record.resized_hw
    cropped = logits[..., :h, :w]
    return F.interpolate(cropped, size=output_hw or record.original_hw, mode="bilinear", align_corners=False)


def input_grid(record: Resized, output_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """(1, H' * W', 2) xy in model-input pixels of the pixel centres of an (H', W') grid over the original
    image (default its own (H, W) pixels), row by row: pixel (i, j) lies at ((j + 0.5) * w / W',
    (i + 0.5) * h / H'), (h, w) being the image's extent in the model input; where
    :func:`logits_to_input_size` samples, for a decoder that answers at points (``decode(..., at=)``)."""
    (h, w), (oh, ow) = record.resized_hw, output_hw or record.original_hw
    y = (torch.arange(oh, dtype=torch.float32) + 0.5) * (h / oh)
    x = (torch.arange(ow, dtype=torch.float32) + 0.5) * (w / ow)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], -1)[None]


def label_frame(label: np.ndarray, size: int) -> np.ndarray:
    """(H, W) label map -> (size, size) int64, resized (nearest) to the image's model frame, zero-padded."""
    h, w = longest_side_shape(label.shape, size)
    t = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))[None, None].float()
    t = F.interpolate(t, size=(h, w), mode="nearest-exact")
    return F.pad(t, (0, size - w, 0, size - h))[0, 0].long().numpy()
