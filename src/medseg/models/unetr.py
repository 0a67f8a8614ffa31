"""UNETR-style automatic segmentation: a plain ViT encoder and a convolutional decoder that reads several
of its depths (Hatamizadeh et al., UNETR, 2022; MONAI's UNETR blocks).

With a token side of ``patch = 2**L`` voxels the decoder works at L + 1 resolutions: the input itself
(a convolution block), 1/2 ... 1/2**(L-1) (hidden states of evenly spaced depths, brought up by
transposed convolutions: the deeper the state, the coarser its level) and 1/2**L (the last hidden state).
From the coarsest level up, each stage upsamples, concatenates that level's features and convolves.

Input (B, C, Z, Y, X) preprocessed by the model's plan (the 'volume' objective plans, as for the 3D
U-Net), sides multiples of ``patch``; output logits (B, K + 1, Z, Y, X) for background and K classes.
The encoder is ``image_encoder``, so MAE weights (:mod:`medseg.models.mae`) load into it by name.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medseg.models.planned import CarriesPlan
from medseg.models.vit import ViTEncoder


class ViTSegmenter(CarriesPlan, nn.Module):
    """ViT encoder + UNETR decoder (module docstring); ``features``: channels at full resolution (doubling
    at each coarser level)."""

    def __init__(self, encoder: ViTEncoder, out_channels: int = 2, features: int = 16) -> None:
        from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock

        super().__init__()
        levels = int(math.log2(encoder.patch))
        if 2 ** levels != encoder.patch or levels < 1:
            raise ValueError(f"the ViT's patch {encoder.patch} is not a power of two")
        sd, dim, norm = encoder.spatial_dims, encoder.dim, "instance"
        self.image_encoder, self.spatial_dims, self.features = encoder, sd, features
        self.image_size, self.divisor = None, encoder.patch
        self.layers = tuple(round(encoder.depth * k / levels) for k in range(1, levels)) + (encoder.depth,)
        self.stem = UnetrBasicBlock(sd, encoder.in_channels, features, 3, 1, norm, res_block=True)
        self.lifts = nn.ModuleList(  # hidden state k (1-based) -> level k: k upsamplings fewer than L
            UnetrPrUpBlock(sd, dim, features * 2 ** k, levels - k - 1, 3, 1, 2, norm, res_block=True)
            for k in range(1, levels))
        self.ups = nn.ModuleList(  # level k + 1 -> level k
            UnetrUpBlock(sd, dim if k == levels - 1 else features * 2 ** (k + 1), features * 2 ** k, 3, 2, norm,
                         res_block=True) for k in range(levels))
        self.head = UnetOutBlock(sd, features, out_channels)
        self._init_plan()

    @property
    def in_channels(self) -> int:
        return self.image_encoder.in_channels

    @property
    def out_channels(self) -> int:
        return self.head.conv.conv.out_channels

    def _fit_plan(self, plan) -> None:
        count = len(plan.classes) + 1
        if self.out_channels != count:
            from monai.networks.blocks import UnetOutBlock

            self.head = UnetOutBlock(self.spatial_dims, self.features, count).to(self.plan_json.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> logits (B, K + 1, *spatial)."""
        grid = self.image_encoder.grid(x.shape[2:])
        hidden = self.image_encoder(x, layers=self.layers)
        maps = [h.transpose(1, 2).reshape(h.shape[0], -1, *grid) for h in hidden]
        skips = [self.stem(x)] + [lift(m) for lift, m in zip(self.lifts, maps[:-1])]
        y = maps[-1]
        for k in reversed(range(len(self.ups))):
            y = self.ups[k](y, skips[k])
        return self.head(y)

    def layer_of(self, name: str) -> int:
        """Depth of parameter ``name`` for layer-wise LR decay: the encoder's own, the decoder above it."""
        if name.startswith("image_encoder."):
            return self.image_encoder.layer_of(name[len("image_encoder."):])
        return self.image_encoder.depth + 1

    @property
    def num_layers(self) -> int:
        return self.image_encoder.depth + 2
