"""Parameter-efficient fine-tuning of a promptable model's image encoder (issue #16): bottleneck adapters
in every encoder block (SAM-Med2D), the same fed with high frequencies (I-MedSAM's frequency adapter),
low-rank updates of its attention and MLP projections (LoRA), or a convolutional branch beside it
(SAM-UNet).

``add_peft(model, "adapters" | "frequency_adapter" | "lora" | "conv_branch", rank)`` puts the new parameters in
``model.peft`` (so a state dict holds ``peft.*`` beside the untouched ``image_encoder.*``, whose names
and values stay as published):

* **adapters**: after every encoder block (TinyViT's MBConv and attention blocks, the HR encoder's
  inverted-residual and gated-linear-attention blocks) ``y = block(x); y + up(GELU(down(y)))`` over
  the channels, ``down`` C -> C / 4, ``up`` C / 4 -> C starting at zero;
* **frequency_adapter**: the same, but the bottleneck reads the block output's high frequencies: each
  channel's spatial spectrum (``rfft2``) with its lowest quarter of frequencies along each axis removed,
  back in space, so the update carries edges and fine texture that the ViT's features smooth away;
* **lora**: every ``nn.Linear`` of the encoder (attention q/k/v and output projections, MLP layers)
  gets ``x W^T + b + (alpha / r) x A^T B^T`` with ``A`` (r, in), ``B`` (out, r) starting at zero
  (:class:`~medseg.models.lowrank.LowRankUpdates`); :func:`merge_lora` folds them into the weights
  (``W += (alpha / r) B A``) for export, after which the model is a plain one again;
* **conv_branch**: a light CNN on the image (:class:`~medseg.models.conv_branch.ConvBranch`) whose
  stride-4/8 maps enter the mask decoder's upsampling through the fusion head (a model without one,
  LiteMedSAM, gets a zero-initialised head: ``mask_decoder.fusion.*``); the encoder runs unchanged.

All start as the identity (the model computes what it computed before) and are added by forward hooks,
so the encoder's code is unchanged. The kind and rank are kept in the buffer ``peft.spec`` (UTF-8 JSON),
so :func:`adopt_peft` rebuilds them before a checkpoint's tensors load (``build_model(..., checkpoint=)``).
"""

from __future__ import annotations

import json
from functools import partial

import torch
from torch import nn

from .conv_branch import BRANCH_WIDTHS, ConvBranch
from .hrencoder import InvertedResidual
from .linear_attention import GLABlock
from .lowrank import LowRankUpdates
from .mask_decoder import FeatureFusion
from .tinyvit import MBConv, TinyViTBlock

PEFT_KINDS = ("adapters", "frequency_adapter", "lora", "conv_branch")
ADAPTED_BLOCKS = (MBConv, TinyViTBlock, InvertedResidual, GLABlock)
"""The encoder blocks an adapter follows: (B, C, H, W) conv blocks and (B, N, C) token blocks."""
ADAPTER_REDUCTION = 4
LOW_FREQUENCIES = 0.25  # frequency_adapter: the share of each axis's lowest frequencies removed
LORA_ALPHA = 1.0


class Adapter(nn.Module):
    """Bottleneck MLP over the channels, residual, zero at the start: (B, C, H, W), or (B, N, C) tokens
    of an (h, w) grid, -> the same shape."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = max(1, dim // ADAPTER_REDUCTION)
        self.down, self.up = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        return self.up(nn.functional.gelu(self.down(x)))

    def forward(self, y: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        if y.dim() == 4:  # channels first: adapt along dim 1
            return y + self.bottleneck(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return y + self.bottleneck(y)


class FrequencyAdapter(Adapter):
    """An :class:`Adapter` whose bottleneck reads the high frequencies of the block output (module docstring)."""

    def forward(self, y: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        tokens = y.dim() == 3
        if tokens:  # (B, N, C) tokens of an (h, w) grid -> (B, C, h, w)
            b, n, c = y.shape
            grid = y.transpose(1, 2).reshape(b, c, *hw)
        else:
            grid = y
        delta = self.bottleneck(high_pass(grid).permute(0, 2, 3, 1))  # (B, H, W, C)
        return y + (delta.reshape(y.shape) if tokens else delta.permute(0, 3, 1, 2))


def high_pass(x: torch.Tensor, share: float = LOW_FREQUENCIES) -> torch.Tensor:
    """(B, C, H, W) -> the same with the lowest ``share`` of frequencies along each axis (the mean
    included) removed from every channel's spectrum; float32 arithmetic, ``x``'s dtype out."""
    h, w = x.shape[-2:]
    spectrum = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W // 2 + 1)
    fy = torch.fft.fftfreq(h, device=x.device).abs()
    fx = torch.fft.rfftfreq(w, device=x.device)
    low = (fy[:, None] < share / 2) & (fx[None, :] < share / 2)
    return torch.fft.irfft2(spectrum.masked_fill(low, 0), s=(h, w), norm="ortho").to(x.dtype)


class EncoderAdapters(nn.Module):
    """One adapter (``kind``: :class:`Adapter` or :class:`FrequencyAdapter`) after each block of
    ``encoder`` (hooks; ``encoder`` is not a submodule)."""

    def __init__(self, encoder: nn.Module, kind: type[Adapter] = Adapter) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict()
        for name, block in encoder.named_modules():
            if isinstance(block, ADAPTED_BLOCKS):
                key = name.replace(".", "__")
                self.adapters[key] = kind(_channels(block))
                block.register_forward_hook(partial(self._hook, key))
        if not self.adapters:
            raise ValueError(f"{type(encoder).__name__} has no block an adapter knows ({ADAPTED_BLOCKS})")

    def _hook(self, key: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.adapters[key](output, inputs[1] if len(inputs) > 1 else None)


def _channels(block: nn.Module) -> int:
    """The channel count of a block's output (the last layer that has weights of that width)."""
    if isinstance(block, MBConv):
        return block.conv3.c.out_channels
    if isinstance(block, InvertedResidual):
        return block.body[-1][0].out_channels
    if isinstance(block, TinyViTBlock):
        return block.mlp.fc2.out_features
    return block.mlp[-1].out_features  # GLABlock


class PEFT(nn.Module):
    """The fine-tuned parameters of a model's encoder: ``spec`` (kind, rank) and the adapters, the LoRA set
    or the conv branch (``branch``; ``model`` gives its sizes: ``image_size``, the prompt encoder's
    embedding size, and whether its decoder fuses encoder maps)."""

    def __init__(self, model: nn.Module, kind: str, rank: int) -> None:
        super().__init__()
        if kind not in PEFT_KINDS:
            raise ValueError(f"unknown fine-tuning kind {kind!r}; use one of {', '.join(PEFT_KINDS)}")
        self.kind, self.rank = kind, int(rank)
        self.register_buffer("spec", torch.tensor(list(json.dumps({"kind": kind, "rank": rank}).encode()),
                                                  dtype=torch.uint8))
        encoder = model.image_encoder
        self.branch = None
        if kind == "conv_branch":
            fusion = model.mask_decoder.fusion
            adds_to = None if fusion is None else (fusion.from_stride4[0].in_channels,
                                                   fusion.from_stride8[0].in_channels)
            self.branch = ConvBranch(model.image_size, model.prompt_encoder.embedding_size[0], adds_to)
        elif kind in ("adapters", "frequency_adapter"):
            self.adapters = EncoderAdapters(encoder, FrequencyAdapter if kind == "frequency_adapter" else Adapter)
        else:
            self.lora = LowRankUpdates(encoder, alpha=LORA_ALPHA)
            self.lora.add("lora", self.rank)
            self.lora.active = "lora"


def add_peft(model: nn.Module, kind: str, rank: int = 8) -> int:
    """Add ``kind`` fine-tuning to ``model.image_encoder`` as ``model.peft`` (on the encoder's device);
    returns the number of new parameters. ValueError when the model has it already."""
    if getattr(model, "peft", None) is not None:
        raise ValueError(f"the model has {model.peft.kind} fine-tuning already")
    device = next(model.image_encoder.parameters()).device
    model.peft = PEFT(model, kind, rank).to(device)
    added = sum(p.numel() for p in model.peft.parameters())
    if kind == "conv_branch" and model.mask_decoder.fusion is None:  # the branch is the head's only source
        c4, c8 = BRANCH_WIDTHS
        model.mask_decoder.fusion = FeatureFusion(c4, c8, dim=model.mask_decoder.iou_token.weight.shape[1]).to(device)
        added += sum(p.numel() for p in model.mask_decoder.fusion.parameters())
    return added


def adopt_peft(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Before ``state`` loads strictly: give ``model`` the fine-tuning its ``peft.spec`` names (if any)."""
    stored = state.get("peft.spec")
    if stored is None or getattr(model, "peft", None) is not None:
        return
    spec = json.loads(bytes(stored.tolist()).decode("utf-8"))
    add_peft(model, spec["kind"], spec["rank"])


def merge_lora(model: nn.Module) -> bool:
    """Fold ``model``'s LoRA updates into its encoder's linear weights and drop them (export); False when
    the model has no LoRA. The merged model computes the same outputs up to rounding."""
    peft = getattr(model, "peft", None)
    if peft is None or peft.kind != "lora":
        return False
    lora = peft.lora
    scale = lora.alpha / lora.ranks["lora"]
    params = lora.sets["lora"]
    with torch.no_grad():
        for name, module in model.image_encoder.named_modules():
            key = name.replace(".", "__")
            if isinstance(module, nn.Linear) and key + "__a" in params:
                module.weight += scale * params[key + "__b"] @ params[key + "__a"]
    lora.active = None
    del model.peft
    model.peft = None
    return True
