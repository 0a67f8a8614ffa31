"""SAM prompt encoder: points, boxes and a low-resolution mask -> sparse and dense embeddings.

Coordinates are (x, y) in pixels of the model input (the resized, padded image of side
``input_size``); boxes are (x0, y0, x1, y1) in the same frame.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d

# Point labels understood by the encoder.
NEGATIVE, POSITIVE, PADDING = 0, 1, -1


class RandomFourierPositions(nn.Module):
    """Positional encoding by random Fourier features of normalised (x, y) in [0, 1]."""

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, xy01: torch.Tensor) -> torch.Tensor:
        """(..., 2) in [0, 1] -> (..., 2 * num_feats)."""
        proj = (2 * xy01 - 1) @ self.positional_encoding_gaussian_matrix * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Encoding of every cell centre of an h x w grid: (2 * num_feats, h, w)."""
        dev = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self.encode(xy).permute(2, 0, 1)

    def points(self, xy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(..., 2) pixel coordinates in an image of (h, w) -> (..., 2 * num_feats)."""
        h, w = size
        return self.encode(xy / torch.tensor([w, h], dtype=xy.dtype, device=xy.device))


class PromptEncoder(nn.Module):
    """Embeds prompts for the mask decoder.

    forward(points=(coords (B,K,2), labels (B,K)) | None, boxes=(B,4) | None, masks=(B,1,4E,4E) | None)
    returns sparse (B, K' , D) and dense (B, D, E, E) embeddings, E = embedding_size.
    Labels: 1 positive, 0 negative, -1 padding.
    """

    def __init__(self, embed_dim: int = 256, embedding_size: int = 64, input_size: int = 256,
                 mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.embedding_size = (embedding_size, embedding_size)
        self.input_size = (input_size, input_size)
        self.pe_layer = RandomFourierPositions(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, 2, stride=2), LayerNorm2d(mask_in_chans // 4), nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, 2, stride=2), LayerNorm2d(mask_in_chans), nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    @property
    def mask_input_size(self) -> tuple[int, int]:
        return (4 * self.embedding_size[0], 4 * self.embedding_size[1])

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid: (1, D, E, E). Without autograd it is computed
        once per Fourier matrix (its device, dtype and version) and reused by every decode."""
        if torch.is_grad_enabled():
            return self.pe_layer.grid(*self.embedding_size).unsqueeze(0)
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        key = (matrix.device, matrix.dtype, matrix.data_ptr(), matrix._version)
        if getattr(self, "_dense_pe_key", None) != key:
            self._dense_pe = self.pe_layer.grid(*self.embedding_size).unsqueeze(0)
            self._dense_pe_key = key
        return self._dense_pe

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        coords = coords + 0.5  # pixel centres
        if pad:  # without a box the decoder expects a padding point after the clicks
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), PADDING)], dim=1)
        emb = self.pe_layer.points(coords, self.input_size)
        table = torch.cat([self.point_embeddings[0].weight, self.point_embeddings[1].weight,
                           self.not_a_point_embed.weight])  # rows: negative, positive, padding
        is_pad = (labels == PADDING).unsqueeze(-1)
        emb = torch.where(is_pad, torch.zeros_like(emb), emb)
        row = torch.where(labels == PADDING, torch.full_like(labels, 2), labels).long().clamp(0, 2)
        return emb + table[row]

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes.reshape(-1, 2, 2) + 0.5)
        emb = self.pe_layer.points(corners, self.input_size)
        corner_embed = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return emb + corner_embed

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None = None, boxes: torch.Tensor | None = None,
                masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if points is not None:
            batch = points[0].shape[0]
        elif boxes is not None:
            batch = boxes.shape[0]
        elif masks is not None:
            batch = masks.shape[0]
        else:
            batch = 1
        device = self.no_mask_embed.weight.device
        parts = [torch.empty(batch, 0, self.embed_dim, device=device)]
        if points is not None:
            parts.append(self._embed_points(points[0].float(), points[1], pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes.float()))
        sparse = torch.cat(parts, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.embedding_size)
        return sparse, dense
