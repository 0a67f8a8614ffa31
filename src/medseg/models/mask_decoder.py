"""SAM mask decoder: image embedding + prompt embeddings -> mask logits and predicted IoU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, LayerNorm2d
from .implicit import ImplicitDecoder, sample_at
from .transformer import TwoWayTransformer


def _transposed_conv2x2(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """``conv`` (kernel 2, stride 2) on pixels given as rows: (B, N, C) -> (B, 4N, C'), the 2x2 block of
    output pixel rows (ky, kx) = (0, 0), (0, 1), (1, 0), (1, 1) written right after its input row."""
    c_in, c_out = conv.weight.shape[:2]
    matrix = conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)  # columns (ky, kx, c')
    b, n, _ = x.shape
    out = torch.addmm(conv.bias.repeat(4), x.reshape(-1, c_in), matrix)
    return out.view(b, 4 * n, c_out)


def subpixels_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 16*h*w, C) rows in sub-pixel order (i, j, ky1, kx1, ky2, kx2) -> the map (B, C, 4h, 4w), whose
    pixel (4i + 2 ky1 + ky2, 4j + 2 kx1 + kx2) each row is."""
    b, _, c = x.shape
    return x.view(b, h, w, 2, 2, 2, 2, c).permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(b, c, 4 * h, 4 * w)


def map_to_subpixels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """A map (B, C, 2^levels h, 2^levels w) -> rows (B, 4^levels h w, C) in the sub-pixel order of
    ``levels`` 2x upsamplings (levels 1: (i, j, ky, kx); 2: as :func:`subpixels_to_map`)."""
    b, c, hh, ww = x.shape
    h, w = hh >> levels, ww >> levels
    if levels == 1:
        rows = x.view(b, c, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1)
    elif levels == 2:
        rows = x.view(b, c, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)
    else:
        raise ValueError(f"levels must be 1 or 2, got {levels}")
    return rows.reshape(b, -1, c)


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

    def _upscale(self, image: torch.Tensor, h: int, w: int,
                 features: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """Image tokens (B, h*w, C) -> (B, 16*h*w, C/8): the two 2x upsamplings of ``output_upscaling``
        in sub-pixel order (:func:`subpixels_to_map` gives the (B, C/8, 4h, 4w) map); with a fusion head,
        the encoder's stride-8 and stride-4 maps are added after the first and the second upsampling.

        A stride-2, 2x2 transposed convolution writes each input pixel's 2x2 output block from that pixel
        alone, so it is one matrix product on the tokens, (C, 4 C') with columns (ky, kx, c'); the norm and
        the activations act per output pixel, so the blocks stay in token order until the logits."""
        up1, norm, act1, up2, act2 = self.output_upscaling
        x = _transposed_conv2x2(image, up1)  # (B, 4hw, C/4): order (i, j, ky, kx)
        fused = self.fusion is not None and features is not None
        if fused:
            from8, from4 = self.fusion.subpixels(features)
            x = x + from8
        x = act1(F.layer_norm(x, norm.weight.shape, norm.weight, norm.bias, norm.eps))
        x = _transposed_conv2x2(x, up2)  # (B, 16hw, C/8): order (i, j, ky1, kx1, ky2, kx2)
        if fused:
            x = x + from4
        return act2(x)

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
        upscaled = self._upscale(image, h, w, features)  # (B, 16hw, C/8) in sub-pixel order
        first, stop = (0, self.num_mask_tokens) if multimask is None else (1, self.num_mask_tokens) if multimask else (0, 1)
        keep = slice(first, stop)  # only the masks asked for go through a hypernetwork and the product
        hyper = torch.stack([self.output_hypernetworks_mlps[i](mask_out[:, i]) for i in range(first, stop)], 1)
        logits = subpixels_to_map(upscaled @ hyper.transpose(1, 2), h, w)  # (B, M, 4h, 4w)
        iou = self.iou_prediction_head(iou_out)[:, keep]
        if at is None:
            return logits, iou
        at = at.to(logits.dtype).expand(b, -1, -1)
        if self.implicit is None or not refine:
            out = sample_at(logits, at)
        else:
            out = self.implicit(at, logits, subpixels_to_map(upscaled, h, w),
                                image.transpose(1, 2).reshape(b, c, h, w), mask_out[:, keep])
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
        self._last: tuple | None = None  # inference: (stride-8 map, stride-4 map, their versions, their rows)

    def project(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The stride-8 and stride-4 maps projected: (B, dim/4, 2E, 2E), (B, dim/8, 4E, 4E)."""
        return self.from_stride8(features["stride8"]), self.from_stride4(features["stride4"])

    def subpixels(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`project`'s maps as rows in the decoder's sub-pixel order: (B, 4E^2, dim/4), (B, 16E^2, dim/8).
        An exported encoder graph gives them ready-made (``features["subpixels"]`` = (stride-8, stride-4)).

        They depend on the image alone, so in inference (eval mode, no autograd) the last image's are kept
        and reused by every prompt on it, for as long as the same map tensors (unchanged) come in (not for
        tensors made under ``torch.inference_mode``, which keep no version to tell a change by)."""
        if "subpixels" in features:
            return features["subpixels"]

        def rows():
            from8, from4 = self.project(features)
            return map_to_subpixels(from8, 1), map_to_subpixels(from4, 2)

        s8, s4 = features["stride8"], features["stride4"]
        if self.training or torch.is_grad_enabled() or s8.is_inference() or s4.is_inference():
            self._last = None
            return rows()
        last = self._last
        if last is None or last[0] is not s8 or last[1] is not s4 or last[2] != (s8._version, s4._version):
            last = self._last = (s8, s4, (s8._version, s4._version), *rows())
        return last[3], last[4]
