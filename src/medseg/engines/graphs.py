"""The two graphs medseg exports, as torch modules: the image encoder and the prompt decoder.

* :class:`EncoderGraph`: image (B, 3, S, S) in [0, 1] (``medseg.data.preprocess.prepare_image``) ->
  embedding (B, 256, E, E), plus, for a model whose mask head fuses the encoder's stride-4/8 maps (the HR
  encoders with the fusion head), ``stride4`` (B, 16 E^2, 32) and ``stride8`` (B, 4 E^2, 64): those maps
  already projected by the fusion head and laid out as the rows the decoder adds them to
  (:meth:`~medseg.models.mask_decoder.FeatureFusion.subpixels`), work that depends on the image alone and
  so is done once per image, not once per prompt.
* :class:`PromptDecoderGraph`: one image's embedding (1, 256, E, E) [+ its stride-4/8 maps], N prompt
  sets packed as points (SAM's ONNX convention, written here for medseg's prompt encoder):
  ``point_coords`` (N, K, 2) float (x, y) in model-input pixels, ``point_labels`` (N, K) float with
  1 positive, 0 negative, 2 box top-left, 3 box bottom-right, -1 padding; ``mask_input`` (N, 1, 4E, 4E)
  logits of an earlier round and ``has_mask_input`` (1,) float (1: use it, 0: "no mask") ->
  ``logits`` (N, 4, 4E, 4E) for all four mask tokens and ``iou`` (N, 4). :func:`pack_prompts` turns
  medseg's boxes/points into that form exactly as :class:`~medseg.models.prompt_encoder.PromptEncoder`
  orders them (clicks, a padding point when there is no box, then the two box corners), so the graph
  computes what ``PromptableSegmenter.decode`` computes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models import PromptableSegmenter
from ..models.prompt_encoder import PADDING

BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 2, 3


class EncoderGraph(nn.Module):
    """``forward(image (B, 3, S, S))`` -> (embedding,) or (embedding, stride4, stride8)."""

    def __init__(self, model: PromptableSegmenter) -> None:
        super().__init__()
        self.model = model

    def output_names(self) -> list[str]:
        return ["embedding", "stride4", "stride8"] if self.model.uses_features else ["embedding"]

    def forward(self, image: torch.Tensor):
        embedding, features = self.model.encode_features(image)
        if features is None:
            return (embedding,)
        rows8, rows4 = self.model.mask_decoder.fusion.subpixels(features)
        return embedding, rows4, rows8


class PromptDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder over packed prompts (see the module docstring)."""

    def __init__(self, model: PromptableSegmenter) -> None:
        super().__init__()
        self.model = model
        pe = model.prompt_encoder
        # rows: negative, positive, box top-left, box bottom-right, padding ("not a point")
        self.register_buffer("label_table", torch.cat([pe.point_embeddings[i].weight for i in range(4)]
                                                      + [pe.not_a_point_embed.weight]).detach().clone(),
                             persistent=False)
        self.register_buffer("dense_pe", pe.get_dense_pe().detach().clone(), persistent=False)

    def input_names(self) -> list[str]:
        names = ["embedding", "point_coords", "point_labels", "mask_input", "has_mask_input"]
        return names + (["stride4", "stride8"] if self.model.uses_features else [])

    def forward(self, embedding: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor, stride4: torch.Tensor | None = None,
                stride8: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        pe = self.model.prompt_encoder
        labels = point_labels.round().long()
        is_pad = (labels == PADDING).unsqueeze(-1)
        emb = pe.pe_layer.points(point_coords + 0.5, pe.input_size)
        emb = torch.where(is_pad, torch.zeros_like(emb), emb)
        row = torch.where(labels == PADDING, torch.full_like(labels, 4), labels).clamp(0, 4)
        sparse = emb + self.label_table[row]
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + (1 - has) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        n = point_coords.shape[0]  # the fusion maps expanded to the prompt sets (OpenVINO does not broadcast them)
        features = None if stride4 is None else {"subpixels": (stride8.expand(n, -1, -1),
                                                               stride4.expand(n, -1, -1))}
        extra = {"features": features} if self.model.uses_features else {}
        return self.model.mask_decoder(embedding, self.dense_pe, sparse, dense, None, **extra)


def pack_prompts(n: int, boxes: torch.Tensor | None, points: tuple[torch.Tensor, torch.Tensor] | None,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """medseg prompts for ``n`` objects -> (point_coords (n, K, 2) float32, point_labels (n, K) float32).

    boxes (n, 4) x0, y0, x1, y1 and points ((n, k, 2) xy, (n, k) labels) in model-input pixels, either
    may be None; the order is the prompt encoder's: clicks, a padding point when there is no box, then
    the box corners. With neither, K = 0 (the decoder then sees only the mask prompt)."""
    coords, labels = [np.zeros((n, 0, 2), np.float32)], [np.zeros((n, 0), np.float32)]
    if points is not None:
        coords.append(points[0].detach().cpu().float().numpy())
        labels.append(points[1].detach().cpu().float().numpy())
        if boxes is None:
            coords.append(np.zeros((n, 1, 2), np.float32))
            labels.append(np.full((n, 1), PADDING, np.float32))
    if boxes is not None:
        coords.append(boxes.detach().cpu().float().numpy().reshape(n, 2, 2))
        labels.append(np.tile(np.array([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]], np.float32), (n, 1)))
    return np.concatenate(coords, 1), np.concatenate(labels, 1)
