"""Masked-image pre-training of the hierarchical 2D encoders (the HR encoders): Hi-End-MAE's objective
for an encoder that is not a plain ViT (issue #14; the 3D ViT's is :mod:`medseg.models.mae`).

A plain ViT can drop its hidden tokens; a hierarchical encoder (convolutions, then linear-attention
stages) sees the whole grid, so, as in SimMIM, the hidden blocks are filled instead: the image
(B, 3, S, S) is cut into a ``GRID`` x ``GRID`` grid of blocks, ``mask_ratio`` of them (a fresh random
choice per sample) get a learned per-channel fill value, and the encoder runs on the result. The
decoder then reconstructs the pixels from three encoder depths, deep to shallow (Hi-End-MAE's
encoder-driven hierarchical decoding): the embedding (S/16), projected; doubled and added to the
stride-8 map, projected; doubled and added to the stride-4 map, projected; each followed by a 3x3
convolution; a 1x1 convolution and a 4x pixel shuffle give (B, 3, S, S). The loss is the mean squared
error on the hidden blocks of the pixels normalised per block (each block's own mean and standard
deviation over its 3 x b x b values).

``forward(x) -> (loss, prediction (B, 3, S, S), mask (B, GRID, GRID) bool, True = hidden)``. The encoder
is ``image_encoder``, so ``model.init_encoder: RUN/latest.safetensors`` starts an HR model from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .hrencoder import HREncoder

GRID = 16  # blocks per side: 64 pixels at 1024, 16 at 256


def _fuse(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), LayerNorm2d(channels), nn.GELU())


class MaskedImageModel(nn.Module):
    """Masked-image modelling of an :class:`HREncoder` (module docstring); ``dim``: the decoder's width."""

    def __init__(self, encoder: HREncoder, mask_ratio: float = 0.75, dim: int = 96) -> None:
        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask ratio {mask_ratio} must lie in (0, 1)")
        self.image_encoder, self.mask_ratio = encoder, mask_ratio
        self.image_size, self.spatial_dims, self.in_channels = encoder.img_size, 2, 3
        if self.image_size % (GRID * 4):
            raise ValueError(f"image side {self.image_size} is not a multiple of {GRID * 4}")
        self.block = self.image_size // GRID
        self.fill = nn.Parameter(torch.full((1, 3, 1, 1), 0.5))  # pixels of a hidden block
        c4, c8 = encoder.dims[0], encoder.dims[1]
        self.from_embedding = nn.Conv2d(256, dim, 1)
        self.from_stride8, self.from_stride4 = nn.Conv2d(c8, dim, 1), nn.Conv2d(c4, dim, 1)
        self.fuse = nn.ModuleList(_fuse(dim) for _ in range(3))
        self.head = nn.Conv2d(dim, 3 * 16, 1)

    def random_mask(self, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, GRID, GRID) bool, True = hidden: ``mask_ratio`` of the blocks of each sample."""
        n = GRID * GRID
        count = int(round(n * self.mask_ratio))
        order = torch.rand(batch, n, device=device, generator=generator).argsort(dim=1)
        mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
        mask.scatter_(1, order[:, :count], True)
        return mask.view(batch, GRID, GRID)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """x (B, 3, S, S) in [0, 1] -> (loss, prediction (B, 3, S, S), mask (B, GRID, GRID))."""
        if tuple(x.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"expected images (B, 3, {self.image_size}, {self.image_size}), got {tuple(x.shape)}")
        mask = self.random_mask(x.shape[0], x.device, generator)
        hidden = mask.repeat_interleave(self.block, 1).repeat_interleave(self.block, 2)[:, None]
        embedding, maps = self.image_encoder.forward_features(torch.where(hidden, self.fill.to(x.dtype), x))
        y = self.fuse[0](self.from_embedding(embedding))
        y = self.fuse[1](F.interpolate(y, scale_factor=2.0) + self.from_stride8(maps["stride8"]))
        y = self.fuse[2](F.interpolate(y, scale_factor=2.0) + self.from_stride4(maps["stride4"]))
        prediction = F.pixel_shuffle(self.head(y), 4)
        target = blocks(x, self.block)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        flat = mask.flatten(1)
        loss = F.mse_loss(blocks(prediction, self.block)[flat].float(), target[flat].float())
        return loss, prediction, mask


def blocks(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/side * W/side, C * side * side): the image's side x side blocks, row by row."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // side, side, w // side, side)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // side) * (w // side), c * side * side)
