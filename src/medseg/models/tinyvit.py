"""TinyViT image encoder in the form LiteMedSAM uses (MobileSAM's TinyViT, full-resolution stem).

Data flow for a (B, 3, S, S) image, S = 256 for LiteMedSAM:

    stem (two 1x1 conv-BN, stride 1)            -> (B, d0, S,   S)
    stage 0: MBConv blocks, downsample x2        -> (B, d1, S/2, S/2)
    stage 1: window-attention blocks, down x2    -> (B, d2, S/4, S/4)
    stage 2: window-attention blocks, down x1    -> (B, d3, S/4, S/4)
    stage 3: window-attention blocks             -> (B, d3, S/4, S/4)
    neck: 1x1 conv, LN, 3x3 conv, LN             -> (B, 256, S/4, S/4)

Attention blocks work on tokens (B, H*W, C) in row-major order; windows are padded at the
bottom/right with zeros when H or W is not a multiple of the window size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .common import ConvBN, LayerNorm2d


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depth-wise, 1x1 project, residual. (B,C,H,W) -> same."""

    def __init__(self, dim: int, expand: float) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, 1, bn_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 conv, strided 3x3 depth-wise conv, 1x1 conv: (B,C,H,W) -> (B,out,H/stride,W/stride)."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x)


class WindowAttention(nn.Module):
    """Multi-head attention inside a ws x ws window with a learned bias per head and per
    (|dy|, |dx|) offset. Tokens: (B', ws*ws, C) -> (B', ws*ws, C)."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # Offset (|dy|, |dx|) between window cells i and j has index |dy| * window + |dx|.
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        index = (ys[:, None] - ys[None]).abs() * window + (xs[:, None] - xs[None]).abs()
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("bias_index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.bias_index].to(q.dtype)
        if q.is_cuda or torch.is_grad_enabled():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:  # CPU inference: on these small windows one fused matmul-plus-bias beats SDPA's masked path ~2x
            bh, d = b * self.num_heads, self.head_dim
            scores = torch.baddbmm(bias.expand(b, -1, -1, -1).reshape(bh, n, n), q.reshape(bh, n, d),
                                   k.reshape(bh, n, d).transpose(1, 2), alpha=d ** -0.5)
            out = torch.bmm(scores.softmax(-1), v.reshape(bh, n, d)).view(b, self.num_heads, n, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TinyViTBlock(nn.Module):
    """Window attention, depth-wise 3x3 conv, MLP; each with a residual. (B, H*W, C) -> same."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)
        self.mlp = _TokenMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        b, n, c = x.shape
        ws = self.window
        pad_b, pad_r = (-h) % ws, (-w) % ws
        y = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
        nh, nw = (h + pad_b) // ws, (w + pad_r) // ws
        y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        y = self.attn(y)
        y = y.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, nh * ws, nw * ws, c)
        x = x + y[:, :h, :w].reshape(b, n, c)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class _TokenMLP(nn.Module):
    """Pre-norm two-layer GELU MLP on tokens (names ``norm``, ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class Stage(nn.Module):
    """Blocks then an optional PatchMerging. Conv stages see (B,C,H,W); attention stages tokens."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None, conv: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.conv = conv

    def forward(self, x: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, C', H', W')."""
        b, c, h, w = x.shape
        if not self.conv:
            x = x.flatten(2).transpose(1, 2)
        for block in self.blocks:
            args = (x,) if self.conv else (x, (h, w))
            x = checkpoint(block, *args, use_reentrant=False) if use_checkpoint else block(*args)
        if not self.conv:
            x = x.transpose(1, 2).reshape(b, c, h, w)
        return self.downsample(x) if self.downsample is not None else x


class _Stem(nn.Module):
    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class TinyViT(nn.Module):
    """TinyViT encoder: (B, in_chans, S, S) image -> (B, out_chans, S/4, S/4) embedding.

    ``img_size`` is the side the model was trained at (LiteMedSAM: 256); any side divisible by 4
    runs. ``strides`` are the downsampling factors after each of the first three stages.
    """

    def __init__(self, img_size: int = 256, in_chans: int = 3, embed_dims: Sequence[int] = (64, 128, 160, 320),
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (2, 4, 5, 10),
                 window_sizes: Sequence[int] = (7, 7, 14, 7), strides: Sequence[int] = (2, 2, 1),
                 mlp_ratio: float = 4.0, mbconv_expand: float = 4.0, out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        self.use_checkpoint = False
        self.patch_embed = _Stem(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            dim = embed_dims[i]
            down = PatchMerging(dim, embed_dims[i + 1], strides[i]) if i + 1 < len(depths) else None
            if i == 0:
                blocks = [MBConv(dim, mbconv_expand) for _ in range(depth)]
            else:
                blocks = [TinyViTBlock(dim, num_heads[i], window_sizes[i], mlp_ratio) for _ in range(depth)]
            self.layers.append(Stage(blocks, down, conv=(i == 0)))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False), LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x, self.use_checkpoint and self.training)
        return self.neck(x)
