"""A memory-efficient high-resolution image encoder (HRMedSeg-style): convolutions where the maps are
large, gated linear attention where they are small enough to need global context.

    (B, 3, S, S), S divisible by 32
      stem        two 3x3 convs, stride 2 each                     -> (B, C0, S/4,  S/4)
      stage 1     inverted-residual conv blocks                    -> (B, C0, S/4,  S/4)   "stride4"
      stage 2     3x3 stride-2 conv, conv blocks                   -> (B, C1, S/8,  S/8)   "stride8"
      stage 3     3x3 stride-2 conv, gated linear attention blocks -> (B, C2, S/16, S/16)
      stage 4     3x3 stride-2 conv, gated linear attention blocks -> (B, C3, S/32, S/32)
      neck        stage 3 + upsampled stage 4 -> 256 channels      -> (B, 256, S/16, S/16) embedding

At S = 1024 the embedding is 256 x 64 x 64, the shape the SAM prompt encoder and mask decoder take,
so a student distilled to reproduce LiteMedSAM's embedding (teacher at 256 x 256) reuses the
teacher's decoder unchanged. Every cost grows linearly with S^2: no token attends to all others.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .common import LayerNorm2d
from .linear_attention import GLABlock


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class InvertedResidual(nn.Module):
    """x + project(dwconv3x3(expand(x))): (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, expand: float) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.body = nn.Sequential(conv_bn(dim, hidden, 1), nn.GELU(), conv_bn(hidden, hidden, 3, groups=hidden),
                                  nn.GELU(), conv_bn(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AttentionStage(nn.Module):
    """Stride-2 conv, then gated linear attention blocks on the token grid: (B, Cin, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, cin: int, dim: int, depth: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.down = conv_bn(cin, dim, 3, 2)
        self.blocks = nn.ModuleList(GLABlock(dim, num_heads, mlp_ratio) for _ in range(depth))

    def forward(self, x: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        x = self.down(x)
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        for block in self.blocks:
            if use_checkpoint:
                tokens = checkpoint(block, tokens, (h, w), use_reentrant=False)
            else:
                tokens = block(tokens, (h, w))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class HREncoder(nn.Module):
    """(B, 3, S, S) in [0, 1], S divisible by 32 -> (B, out_chans, S/16, S/16) embedding.

    ``forward_features`` also returns the stride-4 and stride-8 maps for a high-resolution mask head.
    ``img_size`` is the side it is trained at (1024); other multiples of 32 run.
    """

    def __init__(self, img_size: int = 1024, dims: Sequence[int] = (32, 64, 160, 256),
                 depths: Sequence[int] = (2, 2, 4, 2), num_heads: Sequence[int] = (5, 8),
                 expand: Sequence[float] = (2.0, 3.0), mlp_ratio: float = 3.0, out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        self.dims = tuple(dims)
        self.use_checkpoint = False
        c0, c1, c2, c3 = dims
        self.stem = nn.Sequential(conv_bn(3, c0 // 2, 3, 2), nn.GELU(), conv_bn(c0 // 2, c0, 3, 2), nn.GELU())
        self.stage1 = nn.Sequential(*[InvertedResidual(c0, expand[0]) for _ in range(depths[0])])
        self.stage2 = nn.Sequential(conv_bn(c0, c1, 3, 2), *[InvertedResidual(c1, expand[1]) for _ in range(depths[1])])
        self.stage3 = AttentionStage(c1, c2, depths[2], num_heads[0], mlp_ratio)
        self.stage4 = AttentionStage(c2, c3, depths[3], num_heads[1], mlp_ratio)
        self.lateral3 = nn.Conv2d(c2, out_chans, 1, bias=False)
        self.lateral4 = nn.Conv2d(c3, out_chans, 1, bias=False)
        self.neck = nn.Sequential(LayerNorm2d(out_chans),
                                  nn.Conv2d(out_chans, out_chans, 3, padding=1, groups=out_chans, bias=False),
                                  nn.Conv2d(out_chans, out_chans, 1, bias=False), LayerNorm2d(out_chans))

    def _conv(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and x.requires_grad:
            return checkpoint(stage, x, use_reentrant=False)
        return stage(x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> embedding (B, 256, S/16, S/16), {"stride4": (B, C0, S/4, S/4), "stride8": (B, C1, S/8, S/8)}."""
        side_h, side_w = x.shape[-2:]
        if side_h % 32 or side_w % 32:
            raise ValueError(f"HREncoder takes sides divisible by 32, got {side_h}x{side_w}")
        ckpt = self.use_checkpoint and self.training
        f4 = self._conv(self.stage1, self._conv(self.stem, x))
        f8 = self._conv(self.stage2, f4)
        f16 = self.stage3(f8, ckpt)
        f32 = self.stage4(f16, ckpt)
        fused = self.lateral3(f16) + F.interpolate(self.lateral4(f32), size=f16.shape[-2:], mode="bilinear",
                                                   align_corners=False)
        return self.neck(fused), {"stride4": f4, "stride8": f8}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
