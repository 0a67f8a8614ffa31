"""SAM mask decoder: image embedding + prompt embeddings -> mask logits and predicted IoU."""

from __future__ import annotations

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .implicit import ImplicitDecoder, sample_at
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts ``num_multimask + 1`` masks per prompt set; the first answers unambiguous prompts.

    forward(image_embeddings (B or 1, C, E, E), image_pe (1, C, E, E), sparse (B, N, C),
    dense (B, C, E, E), multimask, features=None, query=None, at=None, refine=True) -> logits (B, M, 4E, 4E),
    iou (B, M) with M = 3 (``multimask``) or 1, or all 4 with ``multimask=None`` (an exported graph returns
    them all). ``query`` (B, C), optional, is added to the single-mask output token (a per-modality
    decoding query of the automatic head, :mod:`medseg.models.universal`). ``at`` (B or 1, P, 2) xy in
    [0, 1] of the input frame: logits (B, M, P) at those points instead, from the implicit decoder when
    there is one (and ``refine``), else sampled bilinearly from the 4E x 4E logits; ``with_coarse`` (with
    ``at``) returns the 4E x 4E logits as a third output too.
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
        self.fusion: FeatureFusion | None = None  # set by a builder: a high-resolution mask head
        self.implicit: ImplicitDecoder | None = None  # set by add_implicit_decoder: logits at any point

    def _upscale(self, x: torch.Tensor, features: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """(B, C, E, E) -> (B, C/8, 4E, 4E); with a fusion head, the encoder's stride-8 and stride-4 maps
        are added after the first and the second 2x upsampling."""
        if self.fusion is None or features is None:
            return self.output_upscaling(x)
        up1, norm, act1, up2, act2 = self.output_upscaling
        from8, from4 = self.fusion.project(features)
        x = act1(norm(up1(x) + from8))
        return act2(up2(x) + from4)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor, multimask: bool | None = False,
                features: dict[str, torch.Tensor] | None = None,
                query: torch.Tensor | None = None, at: torch.Tensor | None = None,
                refine: bool = True, with_coarse: bool = False) -> tuple[torch.Tensor, ...]:
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight]).unsqueeze(0).expand(b, -1, -1)
        if query is not None:  # onto token 1, the single-mask token
            pad = query.new_zeros(b, out_tokens.shape[1] - 2, query.shape[-1])
            out_tokens = out_tokens + torch.cat([torch.zeros_like(query)[:, None], query[:, None], pad], dim=1)
        tokens = torch.cat([out_tokens, sparse], dim=1)
        image = image_embeddings.expand(b, -1, -1, -1) if image_embeddings.shape[0] == 1 else image_embeddings
        image = image + dense
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = image.shape
        hs, image = self.transformer(image, pos, tokens)
        iou_out, mask_out = hs[:, 0], hs[:, 1:1 + self.num_mask_tokens]
        upscaled = self._upscale(image.transpose(1, 2).reshape(b, c, h, w), features)
        first, stop = (0, self.num_mask_tokens) if multimask is None else (1, self.num_mask_tokens) if multimask else (0, 1)
        keep = slice(first, stop)  # only the masks asked for go through a hypernetwork and the product
        hyper = torch.stack([self.output_hypernetworks_mlps[i](mask_out[:, i]) for i in range(first, stop)], 1)
        bu, cu, hu, wu = upscaled.shape
        logits = (hyper @ upscaled.reshape(bu, cu, hu * wu)).view(bu, -1, hu, wu)
        iou = self.iou_prediction_head(iou_out)[:, keep]
        if at is None:
            return logits, iou
        at = at.to(logits.dtype).expand(b, -1, -1)
        if self.implicit is None or not refine:
            out = sample_at(logits, at)
        else:
            out = self.implicit(at, logits, upscaled, image.transpose(1, 2).reshape(b, c, h, w), mask_out[:, keep])
        return (out, iou, logits) if with_coarse else (out, iou)


class FeatureFusion(nn.Module):
    """High-resolution mask head (HRMedSeg / SAM-UNet multi-scale fusion): 1x1 projections of the
    encoder's stride-8 (B, c8, 2E, 2E) and stride-4 (B, c4, 4E, 4E) maps onto the decoder's upsampling
    path (dim/4 and dim/8 channels). Zero-initialised: a fresh head leaves the decoder's output as it was,
    so a teacher's decoder keeps working until the head is fine-tuned."""

    def __init__(self, c4: int, c8: int, dim: int = 256) -> None:
        super().__init__()
        self.from_stride8 = nn.Sequential(nn.Conv2d(c8, dim // 4, 1), LayerNorm2d(dim // 4), nn.Conv2d(dim // 4, dim // 4, 1))
        self.from_stride4 = nn.Sequential(nn.Conv2d(c4, dim // 8, 1), LayerNorm2d(dim // 8), nn.Conv2d(dim // 8, dim // 8, 1))
        for branch in (self.from_stride8, self.from_stride4):
            nn.init.zeros_(branch[-1].weight)
            nn.init.zeros_(branch[-1].bias)
        self._last: tuple | None = None  # inference: (stride-8 map, stride-4 map, their versions, projections)

    def project(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The stride-8 and stride-4 maps projected: (B, dim/4, 2E, 2E), (B, dim/8, 4E, 4E).

        They depend on the image alone, so in inference (eval mode, no autograd) the last image's are kept
        and reused by every prompt on it, for as long as the same map tensors (unchanged) come in; an
        exported encoder graph gives them ready-made (``features["projected"]`` = (stride-8, stride-4))."""
        if "projected" in features:
            return features["projected"]
        s8, s4 = features["stride8"], features["stride4"]
        if self.training or torch.is_grad_enabled():
            self._last = None
            return self.from_stride8(s8), self.from_stride4(s4)
        last = self._last
        if last is None or last[0] is not s8 or last[1] is not s4 or last[2] != (s8._version, s4._version):
            last = self._last = (s8, s4, (s8._version, s4._version), self.from_stride8(s8), self.from_stride4(s4))
        return last[3], last[4]
