"""Gated linear attention over a 2D token grid: cost linear in the number of tokens.

Softmax attention compares every token with every other (N^2); linear attention replaces
``softmax(q k^T) v`` by ``phi(q) (phi(k)^T v)`` with a positive feature map ``phi`` (ELU + 1), so the
(d x d) summary ``phi(k)^T v`` is built once and read by every query: O(N d^2). As in HRMedSeg
(and the MLLA block it builds on), position enters three ways:

* rotary position encoding (2D RoPE) on the feature-mapped queries and keys of the numerator; the
  normaliser uses the unrotated ones, so it stays positive;
* a depth-wise 3x3 convolution of the values added to the output (local positional term, LePE);
* a depth-wise 3x3 convolution before the block (conditional position encoding).

A SiLU gate computed from the input multiplies the output before the final projection.
Tokens are (B, N, C) with N = H * W in row-major (y, x) order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rope_angles(h: int, w: int, head_dim: int, device: torch.device, base: float = 100.0) -> torch.Tensor:
    """Rotation angles (H*W, head_dim/2): the first half of the pairs turn with y, the second with x."""
    if head_dim % 4:
        raise ValueError(f"2D rotary encoding needs a head dimension divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = base ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    ay = (ys[:, None] * freqs)[:, None, :].expand(h, w, quarter)
    ax = (xs[:, None] * freqs)[None, :, :].expand(h, w, quarter)
    return torch.cat([ay, ax], dim=-1).reshape(h * w, 2 * quarter)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive feature pairs of x (..., N, d) by ``angles`` (N, d/2)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos, sin = angles.cos(), angles.sin()
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)


class GatedLinearAttention(nn.Module):
    """(B, N, C) tokens of an (H, W) grid -> (B, N, C); ``num_heads`` heads of C / num_heads."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qk = nn.Linear(dim, 2 * dim)
        self.value = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim, dim)
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj = nn.Linear(dim, dim)
        self._angles: dict[tuple, torch.Tensor] = {}

    def _rope(self, h: int, w: int, head_dim: int, device: torch.device) -> torch.Tensor:
        key = (h, w, head_dim, str(device))
        if key not in self._angles:
            self._angles = {key: rope_angles(h, w, head_dim, device)}  # keep the latest size only
        return self._angles[key]

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        heads, d = self.num_heads, c // self.num_heads
        q, k = (F.elu(t) + 1 for t in self.qk(x).chunk(2, dim=-1))
        v = self.value(x)
        split = lambda t: t.reshape(b, n, heads, d).transpose(1, 2)  # noqa: E731 - (B, heads, N, d)
        q, k, vh = split(q), split(k), split(v)
        angles = self._rope(h, w, d, x.device)
        q_rot, k_rot = apply_rope(q, angles), apply_rope(k, angles)
        summary = (k_rot.transpose(-2, -1) @ vh) / n                               # (B, heads, d, d)
        norm = 1.0 / (q @ k.mean(dim=2, keepdim=True).transpose(-2, -1) + 1e-6)  # (B, heads, N, 1)
        out = (q_rot @ summary) * norm
        out = out.transpose(1, 2).reshape(b, n, c)
        local = self.lepe(v.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return self.proj((out + local) * F.silu(self.gate(x)))


class GLABlock(nn.Module):
    """Conditional position conv -> gated linear attention -> MLP, each residual: (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.cpe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GatedLinearAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        x = x + self.cpe(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
        x = x + self.attn(self.norm1(x), hw)
        return x + self.mlp(self.norm2(x))
