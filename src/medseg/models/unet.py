"""A MONAI U-Net for automatic (prompt-free) binary segmentation, the baseline of fine-tuning.

It takes the promptable model's input, so one data pipeline serves both: ``prepare_image(image, S)``
-> (1, 3, S, S) in [0, 1], resized (longest side S) and zero-padded bottom/right; it returns one
logit map (B, 1, S, S) for "foreground of any class". :func:`predict_mask` crops the padding and
resizes back to the input's (H, W).

Registered in ``medseg.models.build`` as automatic models: ``"unet"`` at 256x256 and
``"unet-tiny"`` at 64x64 for tests; neither has published weights (``pretrained: false``).
``list_models("promptable")`` leaves them out, since they take no prompt.

It trains in :func:`medseg.train.train` with the "unet" objective, which calls the model itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medseg.data.preprocess import logits_to_input_size, prepare_image


class UNetSegmenter(nn.Module):
    """images (B, 3, S, S) in [0, 1] -> logits (B, 1, S, S); ``S`` = ``image_size``, a multiple of 2**len(strides)."""

    def __init__(self, image_size: int = 256, channels: tuple[int, ...] = (16, 32, 64, 128, 256),
                 strides: tuple[int, ...] = (2, 2, 2, 2), num_res_units: int = 1) -> None:
        from monai.networks.nets import UNet

        super().__init__()
        if image_size % 2 ** len(strides):
            raise ValueError(f"image_size {image_size} is not a multiple of {2 ** len(strides)}")
        self.net = UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=channels, strides=strides,
                        num_res_units=num_res_units)
        self.image_size = image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> logits (B, 1, S, S)."""
        return self.net(images)


def predict_mask(model: UNetSegmenter, image: np.ndarray, modality: str | None = None,
                 device: str | torch.device | None = None) -> np.ndarray:
    """Automatic segmentation of one image (H, W) or (H, W, C) -> bool (H, W) mask at its resolution.

    The image is prepared as for the promptable model; the padding is cropped from the logits, which
    are resized (bilinear) to (H, W) and thresholded at 0.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x, record = prepare_image(image, model.image_size, modality)
    model.eval()
    logits = model(x.to(device)).float()
    return (logits_to_input_size(logits, record)[0, 0] > 0).cpu().numpy()


def predict_label_map(models: dict[int, UNetSegmenter], image: np.ndarray, modality: str | None = None) -> np.ndarray:
    """One binary U-Net per class id -> (H, W) int64 label map of ``image`` (H, W) or (H, W, C); where
    masks overlap the later id wins (so an optic cup lies inside its disc)."""
    labels = np.zeros(np.asarray(image).shape[:2], dtype=np.int64)
    for class_id, model in models.items():
        labels[predict_mask(model, image, modality)] = class_id
    return labels
