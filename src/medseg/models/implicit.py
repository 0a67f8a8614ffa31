"""I-MedSAM's implicit (INR) mask decoder: continuous coordinates + features sampled there -> a logit at
any resolution (issue #16, ``model.decoder: implicit``).

It refines the SAM mask decoder's output rather than replacing it. For a query point ``p`` = (x, y)
in [0, 1] of the model-input frame (x right, y down; pixel ``(i, j)`` of an S x S input is
``((j + 0.5) / S, (i + 0.5) / S)``) and each mask token ``m``::

    logit(p, m) = coarse(p, m) + MLP([fourier(p), up(p), image(p), coarse(p, m)] W_p + token_m W_t)

* ``coarse``: the mask decoder's (B, M, 4E, 4E) logits, sampled bilinearly at ``p`` (what the
  upsampling decoder gives there);
* ``fourier(p)``: p and sin/cos of ``2^k pi p`` for k < ``FREQUENCIES`` per axis;
* ``up``: the decoder's upsampled features (B, 32, 4E, 4E) (fused with encoder maps where the model
  has a fusion head), ``image``: the transformer's image embedding (B, 256, E, E) reduced to 32
  channels, both sampled bilinearly at ``p``;
* ``token_m``: mask token ``m``'s output (B, M, 256), a per-object bias of the first layer.

The last layer starts at zero, so a fresh head gives exactly the upsampling decoder's logits. In
inference the MLP runs only where the coarse logit is within ``INFERENCE_BAND`` of 0. It is trained on
sampled points (:func:`medseg.train.interactive.refinement_loss`), decoded at the model's S x S
grid or at any other grid (:func:`medseg.data.preprocess.input_grid`: the input image's own pixels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FREQUENCIES = 8
CHUNK = 65536  # points decoded at once without autograd (bounds the hidden activations' memory)
INFERENCE_BAND = 8.0
"""Without autograd (inference) the MLP runs only at points whose coarse logit is within this of 0, where
the upsampling decoder is unsure (PointRend's idea; the training points are drawn there too); a point
beyond keeps the coarse logit. A whole 1024 x 1024 grid per object is then a band along its outline."""


def sample_at(maps: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """maps (B, C, h, w), at (B, P, 2) xy in [0, 1] -> (B, C, P), bilinear, borders clamped."""
    return F.grid_sample(maps, (at * 2 - 1)[:, None], mode="bilinear", padding_mode="border",
                         align_corners=False)[:, :, 0]


def fourier(at: torch.Tensor, frequencies: int = FREQUENCIES) -> torch.Tensor:
    """(B, P, 2) -> (B, P, 2 + 4 * frequencies): the coordinates and their sines and cosines."""
    scales = (2.0 ** torch.arange(frequencies, device=at.device, dtype=at.dtype)) * math.pi
    angles = (at[..., None] * scales).flatten(-2)  # (B, P, 2F)
    return torch.cat([at, angles.sin(), angles.cos()], -1)


class ImplicitDecoder(nn.Module):
    """forward(at (B or 1, P, 2), coarse (B, M, 4E, 4E), upscaled (B, dim/8, 4E, 4E), image (B, dim, E, E),
    tokens (B, M, dim)) -> logits (B, M, P) (module docstring)."""

    def __init__(self, dim: int = 256, hidden: int = 256, depth: int = 3, reduced: int = 32) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(dim, reduced, 1)
        point_dim = 2 + 4 * FREQUENCIES + dim // 8 + reduced + 1
        self.point = nn.Linear(point_dim, hidden)
        self.token = nn.Linear(dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 2))
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, at: torch.Tensor, coarse: torch.Tensor, upscaled: torch.Tensor, image: torch.Tensor,
                tokens: torch.Tensor) -> torch.Tensor:
        b = coarse.shape[0]
        at = at.to(coarse.dtype).expand(b, -1, -1)
        reduced, bias = self.reduce(image), self.token(tokens)[:, :, None]  # bias (B, M, 1, hidden)
        base = sample_at(coarse, at)  # (B, M, P)
        if torch.is_grad_enabled():  # training: every point asked for
            return base + self._residual(at, base, upscaled, reduced, bias)
        out = base.clone()
        for i in range(b):  # inference: the points near the upsampling decoder's boundary, in chunks
            near = (base[i].abs() < INFERENCE_BAND).any(0).nonzero()[:, 0]
            for idx in near.split(CHUNK):
                one = slice(i, i + 1)
                out[i, :, idx] += self._residual(at[one, idx], base[one, :, idx], upscaled[one], reduced[one],
                                                 bias[one])[0]
        return out

    def _residual(self, at, base, upscaled, reduced, bias) -> torch.Tensor:
        """The MLP's output (B, M, P) at points ``at`` (B, P, 2) whose coarse logits are ``base`` (B, M, P)."""
        shared = torch.cat([fourier(at), sample_at(upscaled, at).transpose(1, 2),
                            sample_at(reduced, at).transpose(1, 2)], -1)  # (B, P, D - 1)
        per_mask = torch.cat([shared[:, None].expand(-1, base.shape[1], -1, -1), base[..., None]], -1)
        h = F.gelu(self.point(per_mask) + bias)  # (B, M, P, hidden)
        for layer in self.hidden:
            h = F.gelu(layer(h))
        return self.out(h)[..., 0]

def add_implicit_decoder(model: nn.Module) -> int:
    """Give ``model.mask_decoder`` an implicit decoder (on its device); returns its parameter count.
    ValueError when it has one already."""
    decoder = model.mask_decoder
    if decoder.implicit is not None:
        raise ValueError("the model's mask decoder has an implicit decoder already")
    dim = decoder.iou_token.weight.shape[1]
    decoder.implicit = ImplicitDecoder(dim).to(decoder.iou_token.weight.device)
    return sum(p.numel() for p in decoder.implicit.parameters())
