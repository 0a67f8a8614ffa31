"""The promptable segmentation model: parts are passed in, never built here (segment-anything style)."""

from __future__ import annotations

import torch
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class PromptableSegmenter(nn.Module):
    """image_encoder + prompt_encoder + mask_decoder.

    ``image_size`` is the side of the square model input (LiteMedSAM: 256); images are resized
    and padded to it by the Predictor, prompts are given in that frame.
    """

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 image_size: int) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_size = image_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised to [0, 1] -> embedding (B, 256, S/4, S/4)."""
        return self.image_encoder(images)

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor | None = None,
               points: tuple[torch.Tensor, torch.Tensor] | None = None, masks: torch.Tensor | None = None,
               multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts for B objects -> logits (B, M, S, S) at the model input's resolution, iou (B, M).

        embedding: (1 or B, 256, E, E); boxes (B, 4) x0,y0,x1,y1; points ((B,K,2) xy, (B,K) labels);
        masks (B, 1, S, S) low-resolution logits from an earlier round. Coordinates in model-input pixels.
        """
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.mask_decoder(embedding, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None,
                points: tuple[torch.Tensor, torch.Tensor] | None = None, masks: torch.Tensor | None = None,
                multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One prompt set per image: images (B, 3, S, S) -> logits (B, M, S, S), iou (B, M)."""
        return self.decode(self.encode(images), boxes, points, masks, multimask)
