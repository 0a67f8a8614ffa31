"""Masked-image pre-training of a ViT encoder with a decoder that reads several encoder depths
(Hi-End-MAE's encoder-driven hierarchical decoding; He et al.'s MAE underneath).

``mask_ratio`` of the tokens are hidden (a fresh random choice per sample); the encoder
(:class:`~medseg.models.vit.ViTEncoder`, ``image_encoder``) sees the visible ones only and returns its
hidden states at ``levels`` depths. The decoder starts from the last hidden state at the visible
positions and a shared mask token elsewhere (plus the position code); each decoder layer attends to
itself, then across to one encoder depth's visible tokens, deep to shallow, then an MLP. A linear head
predicts every hidden token's voxels; the loss is the mean squared error on the hidden tokens of the
voxels normalised per token (each token's own mean and standard deviation).

``forward(x) -> (loss, prediction (B, N, patch**d * C), mask (B, N) bool, True = hidden)``; 2D and 3D.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.vit import ViTEncoder, patchify, sincos_position_code


class CrossLayer(nn.Module):
    """Self-attention over all decoder tokens, cross-attention to one encoder depth, MLP (pre-norm)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm_kv, self.norm3 = (nn.LayerNorm(dim) for _ in range(4))
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) decoder tokens, memory (B, K, D) one encoder depth's visible tokens -> (B, N, D)."""
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        kv = self.norm_kv(memory)
        x = x + self.cross_attn(self.norm2(x), kv, kv, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class MaskedAutoencoder(nn.Module):
    """MAE with hierarchical decoding (module docstring).

    Args:
        encoder: the ViT to pre-train. levels: number of encoder depths the decoder reads (evenly
            spaced, the last block included), one decoder layer each. decoder_dim, decoder_heads: its width.
    """

    def __init__(self, encoder: ViTEncoder, mask_ratio: float = 0.75, levels: int = 4, decoder_dim: int = 144,
                 decoder_heads: int = 4) -> None:
        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask ratio {mask_ratio} must lie in (0, 1)")
        self.image_encoder, self.mask_ratio = encoder, mask_ratio
        self.image_size, self.spatial_dims = None, encoder.spatial_dims
        self.depths = tuple(sorted({round(encoder.depth * k / levels) for k in range(1, levels + 1)}))
        self.project = nn.ModuleList(nn.Linear(encoder.dim, decoder_dim) for _ in self.depths)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.layers = nn.ModuleList(CrossLayer(decoder_dim, decoder_heads) for _ in self.depths)
        self.norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, encoder.patch ** encoder.spatial_dims * encoder.in_channels)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def in_channels(self) -> int:
        return self.image_encoder.in_channels

    def random_keep(self, batch: int, tokens: int, device, generator: torch.Generator | None = None):
        """-> (keep (B, K) indices of visible tokens, ascending; mask (B, N) bool, True = hidden)."""
        count = max(1, int(round(tokens * (1 - self.mask_ratio))))
        noise = torch.rand(batch, tokens, device=device, generator=generator)
        keep = noise.argsort(dim=1)[:, :count].sort(dim=1).values
        mask = torch.ones(batch, tokens, dtype=torch.bool, device=device)
        mask.scatter_(1, keep, False)
        return keep, mask

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """x (B, C, *spatial) -> (loss, prediction (B, N, P), mask (B, N)); see the module docstring."""
        encoder = self.image_encoder
        grid = encoder.grid(x.shape[2:])
        n = 1
        for g in grid:
            n *= g
        keep, mask = self.random_keep(x.shape[0], n, x.device, generator)
        hidden = encoder(x, keep=keep, layers=self.depths)  # shallow -> deep
        code = sincos_position_code(grid, self.mask_token.shape[-1]).to(x)
        memories = [proj(h) + code[keep] for proj, h in zip(self.project, hidden)]
        tokens = self.mask_token.expand(x.shape[0], n, -1).clone()
        tokens.scatter_(1, keep[..., None].expand(-1, -1, tokens.shape[-1]), memories[-1])
        tokens = tokens + code
        for layer, memory in zip(self.layers, reversed(memories)):  # deep to shallow
            tokens = layer(tokens, memory)
        prediction = self.head(self.norm(tokens))
        target = patchify(x, encoder.patch)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        loss = F.mse_loss(prediction[mask], target[mask])
        return loss, prediction, mask
