"""A plain ViT encoder for 2D images or 3D volumes: the backbone of the UNETR-style segmenter
(:mod:`medseg.models.unetr`) and of MAE pre-training (:mod:`medseg.models.mae`).

An input (B, C, *spatial) is cut into non-overlapping cubes (squares in 2D) of ``patch`` voxels per
side: a grid of ``spatial / patch`` tokens in (z, y, x) (or (y, x)) raster order, each the linear
embedding of its voxels plus a fixed sine-cosine position code of its grid index (so any grid size works,
as sliding-window inference and MAE crops need). Pre-norm transformer blocks (PyTorch's own layer, fused
attention) follow. ``forward(x, keep, layers)`` runs only the tokens ``keep`` names (MAE's visible ones)
and returns the hidden states after the blocks ``layers`` (1-based).
"""

from __future__ import annotations

import functools

import torch
from torch import nn


@functools.lru_cache(maxsize=16)
def sincos_position_code(grid: tuple[int, ...], dim: int) -> torch.Tensor:
    """(prod(grid), dim) fixed position code: for each axis, sines and cosines of its index at
    ``dim / (2 * len(grid))`` frequencies (MAE's code, one block of channels per axis). Cached: every
    forward of a patch size asks for the same code (callers do not modify it)."""
    axes = len(grid)
    per_axis = dim // (2 * axes)
    if per_axis * 2 * axes != dim:
        raise ValueError(f"ViT width {dim} is not a multiple of 2 x {axes} (the position code's blocks)")
    omega = 1.0 / 10000 ** (torch.arange(per_axis, dtype=torch.float64) / per_axis)
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in grid], indexing="ij")
    parts = []
    for c in coords:
        angle = c.reshape(-1, 1) * omega[None]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, *spatial) -> (B, N, patch**d * C): each token's voxels, in the encoder's token order."""
    b, c, *spatial = x.shape
    d = len(spatial)
    grid = [n // patch for n in spatial]
    shape = [b, c]
    for g in grid:
        shape += [g, patch]
    x = x.reshape(shape)
    order = [0] + [2 + 2 * i for i in range(d)] + [3 + 2 * i for i in range(d)] + [1]
    return x.permute(order).reshape(b, -1, patch ** d * c)


class ViTEncoder(nn.Module):
    """Plain ViT over 2D or 3D inputs (module docstring).

    Args:
        spatial_dims: 2 or 3. in_channels: C. patch: voxels per token side (8 or 16).
        dim, depth, heads, mlp_ratio: the transformer's width, blocks, attention heads, MLP expansion.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, patch: int = 8, dim: int = 192, depth: int = 8,
                 heads: int = 6, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        self.spatial_dims, self.in_channels, self.patch, self.dim, self.depth = spatial_dims, in_channels, patch, dim, depth
        self.patch_embed = conv(in_channels, dim, kernel_size=patch, stride=patch)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def grid(self, spatial) -> tuple[int, ...]:
        """Token grid of an input of ``spatial`` shape; every side must be a multiple of ``patch``."""
        if any(n % self.patch for n in spatial):
            raise ValueError(f"input {tuple(spatial)} is not a multiple of the ViT's patch {self.patch}")
        return tuple(n // self.patch for n in spatial)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> tokens (B, N, dim) with their position code."""
        grid = self.grid(x.shape[2:])
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        return tokens + sincos_position_code(grid, self.dim).to(tokens)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None,
                layers: tuple[int, ...] | None = None) -> list[torch.Tensor]:
        """x (B, C, *spatial) -> hidden states (B, N or K, dim) after each block of ``layers`` (1-based,
        default the last); ``keep`` (B, K) token indices runs those tokens alone. The last block's output
        is layer-normed."""
        layers = layers or (self.depth,)
        tokens = self.embed(x)
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, self.dim))
        out = {}
        for i, block in enumerate(self.blocks, start=1):
            tokens = block(tokens)
            if i in layers:
                out[i] = self.norm(tokens) if i == self.depth else tokens
            if i == max(layers):
                break
        return [out[i] for i in layers]

    def layer_of(self, name: str) -> int:
        """Depth of parameter ``name`` (relative to this encoder) for layer-wise LR decay: 0 for the patch
        embedding, i for block i - 1, depth + 1 for the final norm."""
        if name.startswith("patch_embed."):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1
