"""The promptable segmentation model: parts are passed in, never built here (segment-anything style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


def resize_square(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(N, M, h, w) logits -> (N, M, size, size), bilinear; returned as they are when already that size.
    The mask prompt going in (to 4E) and the logits coming out (to the model input S) of ``decode``."""
    if tuple(maps.shape[-2:]) == (size, size):
        return maps
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


def pixel_centres(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, size * size, 2) xy of the pixel centres of a size x size frame, row by row."""
    c = torch.arange(size, dtype=torch.float32, device=device) + 0.5
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], -1)[None]


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
        self.peft = None  # parameter-efficient fine-tuning of the encoder (medseg.models.peft.add_peft)

    def adopt_state(self, state: dict[str, torch.Tensor]) -> None:
        """Before ``state`` (a checkpoint) loads strictly: add the encoder fine-tuning and the implicit
        decoder it holds, if any."""
        from .implicit import add_implicit_decoder
        from .peft import adopt_peft

        adopt_peft(self, state)
        if self.mask_decoder.implicit is None and any(k.startswith("mask_decoder.implicit.") for k in state):
            add_implicit_decoder(self)

    @property
    def has_implicit_decoder(self) -> bool:
        """Whether the mask decoder has an implicit decoder: logits at any point (``decode(..., at=)``)."""
        return self.mask_decoder.implicit is not None

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised to [0, 1] -> embedding (B, 256, E, E) (LiteMedSAM E = S/4, HR E = S/16)."""
        return self.image_encoder(images)

    @property
    def uses_features(self) -> bool:
        """Whether the mask decoder fuses the encoder's stride-4/8 maps (a high-resolution mask head)."""
        return getattr(self.mask_decoder, "fusion", None) is not None

    def encode_features(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """-> (embedding, {"stride4", "stride8"} maps for the high-resolution mask head, or None); with a
        conv branch (``peft.branch``) the maps are (or include) the branch's."""
        branch = getattr(self.peft, "branch", None)
        if branch is not None:
            return branch.encode(self.image_encoder, images)
        if self.uses_features:
            return self.image_encoder.forward_features(images)
        return self.encode(images), None

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor | None = None,
               points: tuple[torch.Tensor, torch.Tensor] | None = None, masks: torch.Tensor | None = None,
               multimask: bool = False, features: dict[str, torch.Tensor] | None = None,
               at: torch.Tensor | None = None, refine: bool = True,
               with_coarse: bool = False) -> tuple[torch.Tensor, ...]:
        """Prompts for B objects -> logits (B, M, S, S) at the model input's resolution, iou (B, M).

        embedding: (1 or B, 256, E, E); boxes (B, 4) x0,y0,x1,y1; points ((B,K,2) xy, (B,K) labels);
        masks (B, 1, H, W) logits from an earlier round (resized to the mask-prompt size 4E if needed);
        features: the encoder's stride-4/8 maps (``encode_features``), required by a high-resolution
        mask head. Coordinates in model-input pixels.

        at: (B or 1, P, 2) continuous xy in model-input pixels (pixel (i, j)'s centre is (j + 0.5, i + 0.5)):
        logits (B, M, P) at those points instead (:func:`medseg.data.preprocess.input_grid` gives the
        input image's own pixels). With an implicit decoder the S x S logits are its output at the pixel
        centres too; ``refine=False`` gives the upsampling decoder's under it (training's cheap rounds).
        ``with_coarse`` (with ``at``): also that decoder's S x S logits, from the same pass, as a third output.
        """
        if self.uses_features and features is None:
            raise ValueError("this model's mask head fuses encoder features: decode(..., features=...) from "
                             "encode_features(images)")
        if masks is not None:
            masks = resize_square(masks, 4 * self.prompt_encoder.embedding_size[0])
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        extra = {"features": features} if self.uses_features else {}
        size = self.image_size
        grid = at is None and refine and self.has_implicit_decoder
        if grid:
            at = pixel_centres(size, embedding.device)
        if at is not None:
            extra.update(at=at / size, refine=refine)
            if with_coarse:
                extra["with_coarse"] = True
        logits, iou, *coarse = self.mask_decoder(embedding, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                                 multimask, **extra)
        coarse = [resize_square(c, size) for c in coarse]
        if grid:
            return logits.unflatten(-1, (size, size)), iou, *coarse
        return (logits if at is not None else resize_square(logits, size)), iou, *coarse

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None,
                points: tuple[torch.Tensor, torch.Tensor] | None = None, masks: torch.Tensor | None = None,
                multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One prompt set per image: images (B, 3, S, S) -> logits (B, M, S, S), iou (B, M)."""
        embedding, features = self.encode_features(images)
        return self.decode(embedding, boxes, points, masks, multimask, features)
