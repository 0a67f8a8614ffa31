"""SAM mask decoder: image embedding + prompt embeddings -> mask logits and predicted IoU."""

from __future__ import annotations

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts ``num_multimask + 1`` masks per prompt set; the first answers unambiguous prompts.

    forward(image_embeddings (B or 1, C, E, E), image_pe (1, C, E, E), sparse (B, N, C),
    dense (B, C, E, E), multimask) -> logits (B, M, 4E, 4E), iou (B, M) with M = 3 or 1.
    """

    def __init__(self, transformer: TwoWayTransformer, dim: int = 256, num_multimask: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden: int = 256) -> None:
        super().__init__()
        self.transformer = transformer
        self.num_mask_tokens = num_multimask + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, stride=2), LayerNorm2d(dim // 4), nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, stride=2), nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, iou_head_hidden, self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor, multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight]).unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([out_tokens, sparse], dim=1)
        image = image_embeddings.expand(b, -1, -1, -1) if image_embeddings.shape[0] == 1 else image_embeddings
        image = image + dense
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = image.shape
        hs, image = self.transformer(image, pos, tokens)
        iou_out, mask_out = hs[:, 0], hs[:, 1:1 + self.num_mask_tokens]
        upscaled = self.output_upscaling(image.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        bu, cu, hu, wu = upscaled.shape
        logits = (hyper @ upscaled.view(bu, cu, hu * wu)).view(bu, -1, hu, wu)
        iou = self.iou_prediction_head(iou_out)
        keep = slice(1, None) if multimask else slice(0, 1)
        return logits[:, keep], iou[:, keep]
