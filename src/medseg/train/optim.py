"""What trains, how it steps: parameter freezing, the training forward, AdamW, LR schedule, AMP."""

from __future__ import annotations

import math

import torch
from torch import nn

from medseg.errors import InputError
from medseg.models.peft import PEFT_KINDS
from medseg.train.config import OptimConfig

# Parts (parameter-name prefixes) of a PromptableSegmenter that train under each ``model.trainable``
# choice (None: every part but the image encoder).
TRAINABLE_PARTS: dict[str, tuple[str, ...] | None] = {
    "encoder": ("image_encoder",),
    "decoder": ("mask_decoder",),
    "prompt_decoder": ("prompt_encoder", "mask_decoder"),
    "encoder_frozen": None,
    "automatic": ("automatic",),
    "volume_head": ("volume_head",),  # a promptable 3D model's head (medseg.models.prompt3d); the 2D model frozen  # a universal model's prompt-free head (medseg.models.universal)
    "all": (),
    # the frozen encoder's adapters, low-rank updates or conv branch (medseg.models.peft) + the mask decoder's
    # heads (upsampling, fusion, hypernetworks, IoU, an implicit decoder); its two-way transformer stays as
    # published, so a PEFT run trains ~1 M parameters, not the decoder's 4 M
    **{kind: ("peft", "mask_decoder") for kind in PEFT_KINDS},
}
FROZEN_IN_PEFT = ("mask_decoder.transformer",)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def select_trainable(model: nn.Module, trainable: str) -> tuple[int, int]:
    """Set ``requires_grad`` per ``trainable``; returns (trainable, total) parameter counts."""
    if trainable not in TRAINABLE_PARTS:
        raise InputError(f"config key 'model.trainable': {trainable!r} is not one of {', '.join(TRAINABLE_PARTS)}")
    parts = TRAINABLE_PARTS[trainable]
    frozen = FROZEN_IN_PEFT if trainable in PEFT_KINDS else ()
    for name, param in model.named_parameters():
        if trainable == "all":
            param.requires_grad_(True)
        elif parts is None:
            param.requires_grad_(not _under(name, ("image_encoder",)))
        else:
            param.requires_grad_(_under(name, parts) and not _under(name, frozen))
    counts = [(p.numel(), p.requires_grad) for p in model.parameters()]
    return sum(n for n, g in counts if g), sum(n for n, _ in counts)


class TrainForward(nn.Module):
    """The model as an objective's loss uses it, called through DDP when there are several processes.

    ``forward(step)`` returns ``step(self)``: everything one loss does with the model (an encoding
    and several prompt rounds on it, an embedding alone, a head on cached embeddings) runs inside
    one forward, as DDP needs. Inside ``step``, :meth:`encode` runs a frozen image encoder without
    autograd, :meth:`decode` is the model's decoder and :attr:`model` the bare model. Parts without
    trainable parameters stay in eval mode (BatchNorm statistics kept as loaded).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @staticmethod
    def _frozen(part: nn.Module) -> bool:
        return not any(p.requires_grad for p in part.parameters())

    def train(self, mode: bool = True) -> "TrainForward":
        super().train(mode)
        for part in self.model.children():
            if self._frozen(part):
                part.eval()
        return self

    def forward(self, step):
        """``step(self)``: the objective's own use of the model, inside DDP's forward."""
        return step(self)

    def encode(self, images: torch.Tensor):
        """images (B, 3, S, S) -> (embedding (B, 256, E, E), encoder features or None), without
        autograd when the image encoder is frozen and has no trainable adapters or low-rank updates."""
        peft = getattr(self.model, "peft", None)
        tuned = peft is not None and not self._frozen(peft)
        grad = torch.is_grad_enabled() and (tuned or not self._frozen(self.model.image_encoder))
        with torch.set_grad_enabled(grad):
            return self.model.encode_features(images)

    def decode(self, embedding: torch.Tensor, boxes=None, points=None, masks=None, multimask: bool = False,
               features=None, **kwargs):
        """The model's ``decode``: -> (logits (B, M, S, S), iou (B, M)); ``kwargs``: ``at``, ``refine``."""
        return self.model.decode(embedding, boxes, points, masks, multimask, features=features, **kwargs)


def bare_model(model: nn.Module) -> nn.Module:
    """The segmenter inside a DistributedDataParallel wrapper and/or a TrainForward (or the model itself)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "model", model)    # TrainForward


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; weight decay on matrices/kernels only (not biases, norms).

    With ``cfg.layer_decay`` (a model with ``layer_of(name)`` and ``num_layers``: a ViT), layer-wise
    learning-rate decay: a parameter of layer l gets ``lr * layer_decay ** (num_layers - 1 - l)``, so
    the patch embedding of a pre-trained encoder moves least and the new decoder at the full rate."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise InputError("no trainable parameters: check 'model.trainable'")
    decay = cfg.layer_decay
    if decay is not None and not hasattr(model, "layer_of"):
        raise InputError(f"config key 'optim.layer_decay' needs a model with layers (a ViT such as vit3d), not "
                         f"{type(model).__name__}; remove the key")
    groups: dict[tuple[float, float], list] = {}
    for name, param in named:
        scale = decay ** (model.num_layers - 1 - model.layer_of(name)) if decay is not None else 1.0
        wd = cfg.weight_decay if param.ndim >= 2 else 0.0
        groups.setdefault((scale, wd), []).append(param)
    return torch.optim.AdamW([{"params": ps, "weight_decay": wd, "lr": cfg.lr * scale}
                              for (scale, wd), ps in groups.items()], lr=cfg.lr, betas=tuple(cfg.betas))


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based): linear warm-up over ``warmup``
    steps, then cosine decay from 1 to ``min_ratio`` at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_schedule(cfg: OptimConfig, total_steps: int):
    """``step -> multiplier of the base LR`` (:func:`lr_factor`) of a run of ``total_steps`` optimizer steps."""
    def factor(step: int) -> float:
        return lr_factor(step, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """LambdaLR stepping once per optimizer step (its state dict is plain numbers)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg, total_steps))


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` -> bf16 on CUDA (fp16 where bf16 is unsupported), off on CPU."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def enable_activation_checkpointing(model: nn.Module) -> bool:
    """Recompute encoder activations in backward (saves memory when the encoder trains)."""
    encoder = getattr(model, "image_encoder", None)
    if encoder is None or not hasattr(encoder, "use_checkpoint"):
        return False
    encoder.use_checkpoint = True
    return True
