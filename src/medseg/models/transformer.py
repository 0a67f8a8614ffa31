"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Shapes: image (B, C, H, W) with positional encoding of the same shape; tokens (B, N, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by ``downsample``."""

    def __init__(self, dim: int, num_heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, Nq, C), k and v (B, Nk, C) -> (B, Nq, C).

        Between a few prompt tokens and the E x E image tokens the projections of the long side cost most;
        when heads x (short side) < the projection width they are re-associated onto the short side
        (the same product, in another order: about half the multiply-adds, the same result to rounding).
        """
        width = self.q_proj.out_features
        if self.num_heads * q.shape[1] < width < k.shape[1]:
            return self._few_queries(q, k, v)
        if self.num_heads * k.shape[1] < width < q.shape[1]:
            return self._few_keys(q, k, v)
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))

    def _head_weights(self, proj: nn.Linear) -> torch.Tensor:
        """A projection's weight (heads x d, C) -> (heads, d, C)."""
        return proj.weight.view(self.num_heads, -1, proj.weight.shape[1])

    def _few_queries(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Nq small: scores = (q_h W_k,h) k^T (the k bias adds a constant per query row, which softmax
        ignores); each head's context (P_h v) W_v,h^T + b_v, the rows of P summing to 1."""
        b, nq, _ = q.shape
        h = self.num_heads
        qh = self.q_proj(q).view(b, nq, h, -1)  # (B, Nq, H, d)
        scale = qh.shape[-1] ** -0.5
        qk = torch.einsum("bnhd,hdc->bhnc", qh * scale, self._head_weights(self.k_proj)).flatten(1, 2)
        weights = (qk @ k.transpose(1, 2)).softmax(-1)  # (B, H*Nq, Nk)
        context = (weights @ v).view(b, h, nq, -1)  # (B, H, Nq, C)
        out = torch.einsum("bhnc,hdc->bnhd", context, self._head_weights(self.v_proj)).flatten(2)
        return self.out_proj(out + self.v_proj.bias)

    def _few_keys(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Nk small: scores = q (W_q,h^T k_h^T) + b_q,h k_h^T; output = sum_h P_h (v_h W_o,h^T) + b_o."""
        b, nq, _ = q.shape
        nk, h = k.shape[1], self.num_heads
        kh = self.k_proj(k).view(b, nk, h, -1)  # (B, Nk, H, d)
        kh = kh * kh.shape[-1] ** -0.5
        vh = self.v_proj(v).view(b, nk, h, -1)
        wq = self._head_weights(self.q_proj)  # (H, d, C)
        keys = torch.einsum("hdc,bkhd->bhkc", wq, kh).flatten(1, 2)  # (B, H*Nk, C)
        bias = torch.einsum("hd,bkhd->bhk", self.q_proj.bias.view(h, -1), kh).flatten(1)  # (B, H*Nk)
        # (B, H*Nk, Nq): the softmax runs over the Nk axis with Nq contiguous (a softmax over a short
        # last axis is slow on the CPU)
        scores = torch.baddbmm(bias[..., None], keys, q.transpose(1, 2))
        weights = scores.view(b, h, nk, nq).softmax(2).view(b, h * nk, nq)
        wo = self.out_proj.weight.view(self.out_proj.weight.shape[0], h, -1)  # (C, H, d)
        values = torch.einsum("bkhd,chd->bhkc", vh, wo).flatten(1, 2)  # (B, H*Nk, C)
        return torch.baddbmm(self.out_proj.bias.expand(b, 1, -1), weights.transpose(1, 2), values)


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(torch.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """Token self-attention, tokens->image cross-attention, MLP on tokens, image->tokens cross-attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _FeedForward(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample)
        self.skip_first_pe = skip_first_pe

    def forward(self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor,
                image_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)
        q, k = tokens + token_pe, image + image_pe  # k serves both cross-attentions: image is unchanged
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(q, k, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        q = tokens + token_pe
        image = self.norm4(image + self.cross_attn_image_to_token(k, q, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """forward(image (B,C,H,W), image_pe (B,C,H,W), tokens (B,N,C)) -> (tokens (B,N,C), image (B,H*W,C))."""

    def __init__(self, depth: int = 2, dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048,
                 downsample: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, num_heads, mlp_dim, downsample, skip_first_pe=(i == 0)) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (B, C, H, W) -> (B, H*W, C), made contiguous: free for a channels-last map, else one copy (the
        # permuted view of an NCHW map would make every elementwise op below a strided, transposing one)
        image = image.permute(0, 2, 3, 1).flatten(1, 2).contiguous()
        image_pe = image_pe.permute(0, 2, 3, 1).flatten(1, 2).contiguous()
        queries = tokens
        for layer in self.layers:
            queries, image = layer(queries, image, tokens, image_pe)
        q, k = queries + tokens, image + image_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, image))
        return queries, image
