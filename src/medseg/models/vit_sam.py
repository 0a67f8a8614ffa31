"""A SAM-style plain ViT image encoder (ViT-B/L/H shape of Segment Anything), written for this project.

Data flow for a (B, 3, H, W) image, H and W divisible by ``patch_size`` (16), grid h, w = H/16, W/16:

    patch embed: conv 16x16, stride 16, channels-last        -> (B, h, w, C)
    + absolute position embedding (1, S/16, S/16, C),
      bicubically resized when (h, w) != (S/16, S/16)         -> (B, h, w, C)
    depth x Block (pre-norm):
        x = x + Attention(LayerNorm(x))   windowed (ws x ws windows, zero-padded at the
                                          bottom/right to a multiple of ws) or global
                                          (blocks in ``global_attn_indexes``)
        x = x + MLP(LayerNorm(x))         Linear -> GELU -> Linear, hidden C * mlp_ratio
                                                              -> (B, h, w, C)
    neck: conv1x1 -> LayerNorm2d -> conv3x3 -> LayerNorm2d    -> (B, out_chans, h, w)

Attention adds a decomposed relative position bias: for a query at (qy, qx) and a key at (ky, kx)
the bias is ``<q, Rh[qy - ky]> + <q, Rw[qx - kx]>`` with learned tables Rh, Rw of 2 * size - 1 rows
(size = ws for windowed blocks, the native grid S/16 for global ones); the tables are linearly
resized when the attention size differs (a global block at another input side).

``build_sam_vit_b_encoder()`` gives the ViT-B shape (89.7 M parameters) with random weights; it is a
cost reference for the benchmarks, no published weights are loaded here.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .common import LayerNorm2d


def resize_rel_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """(L, D) table of relative offsets -> (2 * size - 1, D), linearly resized if L differs."""
    length = 2 * size - 1
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.t()[None], size=length, mode="linear", align_corners=False)
    return resized[0].t()


def rel_pos_lookup(table: torch.Tensor, size: int) -> torch.Tensor:
    """(L, D) table -> (size, size, D) with entry [i, j] = table row of offset i - j (query i, key j)."""
    table = resize_rel_table(table, size)
    coords = torch.arange(size, device=table.device)
    offsets = coords[:, None] - coords[None, :] + (size - 1)
    return table[offsets]


def decomposed_rel_pos_bias(q: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor,
                            hw: tuple[int, int]) -> torch.Tensor:
    """Additive attention bias from queries q (B, heads, h*w, D) -> (B, heads, h*w, h*w).

    bias[b, n, (qy, qx), (ky, kx)] = <q, Rh[qy - ky]> + <q, Rw[qx - kx]>.
    """
    h, w = hw
    b, heads, n, d = q.shape
    rh = rel_pos_lookup(table_h, h).to(q.dtype)  # (h, h, D)
    rw = rel_pos_lookup(table_w, w).to(q.dtype)  # (w, w, D)
    grid_q = q.reshape(b, heads, h, w, d)
    # contiguous: einsum may return permuted strides, and the broadcast sum below (the one (N, N)-sized
    # tensor) would inherit them and cost a second (N, N) copy in the reshape
    bias_h = torch.einsum("bnyxd,ykd->bnyxk", grid_q, rh).contiguous()  # (B, heads, h, w, h)
    bias_w = torch.einsum("bnyxd,xkd->bnyxk", grid_q, rw).contiguous()  # (B, heads, h, w, w)
    bias = bias_h[..., :, None] + bias_w[..., None, :]                  # (B, heads, h, w, h, w)
    return bias.view(b, heads, n, n)


class Attention(nn.Module):
    """Multi-head self-attention on a (B, h, w, C) grid, optionally with decomposed relative
    position bias for grids of side ``input_size`` (resized for other sides). -> (B, h, w, C)."""

    def __init__(self, dim: int, num_heads: int, use_rel_pos: bool, input_size: tuple[int, int]) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, self.head_dim))
            nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
            nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, h*w, D)
        bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w)) if self.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


def window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, h, w, C) -> (B * nh * nw, ws, ws, C) windows, zero-padding bottom/right; returns the padded size."""
    b, h, w, c = x.shape
    pad_b, pad_r = (-h) % ws, (-w) % ws
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = h + pad_b, w + pad_r
    x = x.view(b, hp // ws, ws, wp // ws, ws, c).transpose(2, 3)
    return x.reshape(-1, ws, ws, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, ws: int, padded: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of ``window_partition``: (B * nh * nw, ws, ws, C) -> (B, h, w, C), padding cropped."""
    hp, wp = padded
    h, w = hw
    c = windows.shape[-1]
    b = windows.shape[0] // ((hp // ws) * (wp // ws))
    x = windows.view(b, hp // ws, wp // ws, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
    return x[:, :h, :w].contiguous() if (hp, wp) != (h, w) else x


class Block(nn.Module):
    """Pre-norm transformer block on a (B, h, w, C) grid -> same shape.

    ``window_size`` > 0: attention inside non-overlapping ws x ws windows; 0: global attention over
    the whole grid (relative position tables sized for ``grid_size``).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, use_rel_pos: bool, window_size: int,
                 grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = (window_size, window_size) if window_size > 0 else grid_size
        self.attn = Attention(dim, num_heads, use_rel_pos, attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window_size > 0:
            hw = (y.shape[1], y.shape[2])
            windows, padded = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(windows), self.window_size, padded, hw)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class SamViTEncoder(nn.Module):
    """SAM-style ViT encoder: (B, 3, H, W) image -> (B, out_chans, H/16, W/16) embedding.

    ``img_size`` is the side the position embedding and the global blocks' relative position tables
    are sized for (SAM: 1024); any H, W divisible by ``patch_size`` runs (both are resized).
    Set ``use_checkpoint = True`` to recompute each block's activations in backward while training.
    """

    def __init__(self, img_size: int = 1024, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, window_size: int = 14,
                 global_attn_indexes: Sequence[int] = (2, 5, 8, 11), out_chans: int = 256,
                 use_rel_pos: bool = True, in_chans: int = 3, use_abs_pos: bool = True) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.use_checkpoint = False
        grid = img_size // patch_size
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        globals_ = set(global_attn_indexes)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, use_rel_pos, 0 if i in globals_ else window_size, (grid, grid))
            for i in range(depth))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, 1, bias=False), LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans),
        )

    def position_embedding(self, hw: tuple[int, int]) -> torch.Tensor:
        """(1, h, w, C) absolute position embedding, bicubically resized from the native grid if needed."""
        pos = self.pos_embed
        if pos.shape[1:3] == hw:
            return pos
        return F.interpolate(pos.permute(0, 3, 1, 2), size=hw, mode="bicubic", align_corners=False).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, out_chans, H/16, W/16)."""
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"input side {tuple(x.shape[-2:])} is not divisible by patch size {self.patch_size}")
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # (B, h, w, C)
        if self.pos_embed is not None:
            x = x + self.position_embedding((x.shape[1], x.shape[2]))
        use_checkpoint = self.use_checkpoint and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
        return self.neck(x.permute(0, 3, 1, 2))


def build_sam_vit_b_encoder(img_size: int = 1024) -> SamViTEncoder:
    """ViT-B SAM image encoder with random weights: embed 768, depth 12, 12 heads, window 14, global
    attention in blocks 2, 5, 8, 11, neck to 256 channels; (B, 3, S, S) -> (B, 256, S/16, S/16)."""
    return SamViTEncoder(img_size=img_size, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                         window_size=14, global_attn_indexes=(2, 5, 8, 11), out_chans=256, use_rel_pos=True)
