"""SAM-UNet's convolutional branch: a light CNN on the image, beside a frozen encoder, whose stride-4/8
maps reach the mask decoder's upsampling path through the fusion head (issue #16, ``model.trainable:
conv_branch``).

The branch reads the model-input image (B, 3, S, S) and gives maps at the two resolutions the mask
decoder upsamples through, ``4E`` and ``2E`` for an embedding of side ``E`` (named ``stride4`` and
``stride8`` after the HR encoder's 1024-pixel frame; for LiteMedSAM at 256 they are the full and half
input resolution):

* a stem of 3x3 stride-2 convolutions down to ``4E`` (none for LiteMedSAM, two for the HR encoders);
* at ``4E``: two 3x3 conv -> LayerNorm -> GELU layers, width ``c4`` -> ``stride4``;
* at ``2E``: a stride-2 layer and one more, width ``c8`` -> ``stride8``.

A model whose decoder already fuses its encoder's maps (the HR encoders) gets the branch's maps added
to the encoder's through zero-initialised 1x1 projections, so the fine-tuned model starts as it was; a
model without (LiteMedSAM) gets a fresh zero-initialised fusion head that reads the branch alone
(:func:`medseg.models.peft.add_peft`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d

BRANCH_WIDTHS = (32, 64)  # (c4, c8) of a branch that is the only source of the fusion head's maps


def _layer(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), LayerNorm2d(c_out), nn.GELU())


class ConvBranch(nn.Module):
    """image (B, 3, S, S) -> {"stride4": (B, c4, 4E, 4E), "stride8": (B, c8, 2E, 2E)} (module docstring).

    ``adds_to`` (c4, c8): the channel counts of the encoder maps the branch is added to (HR encoders),
    through zero-initialised 1x1 projections; None: the branch's own maps (widths ``BRANCH_WIDTHS``)."""

    def __init__(self, image_size: int, embedding_size: int, adds_to: tuple[int, int] | None = None) -> None:
        super().__init__()
        stride4 = image_size // (4 * embedding_size)
        if stride4 < 1 or 4 * embedding_size * stride4 != image_size or stride4 & (stride4 - 1):
            raise ValueError(f"a conv branch needs an input side {image_size} that is a power-of-two multiple "
                             f"of 4x the embedding side {embedding_size}")
        c4, c8 = BRANCH_WIDTHS
        steps = int(math.log2(stride4))
        stem = [_layer(3 if i == 0 else c4, c4, 2) for i in range(steps)]
        self.at4 = nn.Sequential(*stem, _layer(3 if not stem else c4, c4), _layer(c4, c4))
        self.at8 = nn.Sequential(_layer(c4, c8, 2), _layer(c8, c8))
        self.adds_to = adds_to
        if adds_to is not None:
            self.to4, self.to8 = nn.Conv2d(c4, adds_to[0], 1), nn.Conv2d(c8, adds_to[1], 1)
            for proj in (self.to4, self.to8):
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f4 = self.at4(images)
        f8 = self.at8(f4)
        return {"stride4": f4, "stride8": f8}

    def encode(self, encoder: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The frozen encoder's embedding (B, 256, E, E) with the maps the fusion head reads: the branch's,
        or the encoder's own plus the branch's projected (``adds_to``)."""
        maps = self(images)
        if self.adds_to is None:
            return encoder(images), maps
        embedding, own = encoder.forward_features(images)
        return embedding, {"stride4": own["stride4"] + self.to4(maps["stride4"]),
                           "stride8": own["stride8"] + self.to8(maps["stride8"])}
