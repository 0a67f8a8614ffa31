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
from medseg.models.planned import CarriesPlan


class UNetSegmenter(CarriesPlan, nn.Module):
    """A MONAI U-Net, 2D or 3D by ``spatial_dims`` (one class: MONAI's own switch).

    2D (the default): images (B, 3, S, S) in [0, 1] -> logits (B, 1, S, S); ``S`` = ``image_size``, a
    multiple of 2**len(strides). 3D: volumes (B, C, Z, Y, X), preprocessed by the model's
    :class:`~medseg.data.planning.Plan`, -> logits (B, K + 1, Z, Y, X) for background and K classes;
    ``image_size`` is None (any patch whose sides are multiples of 2**len(strides)). The plan is kept in
    the weights (buffer ``plan_json``, UTF-8 JSON), so a checkpoint preprocesses as its training did.
    """

    def __init__(self, image_size: int | None = 256, channels: tuple[int, ...] = (16, 32, 64, 128, 256),
                 strides: tuple[int, ...] = (2, 2, 2, 2), num_res_units: int = 1, spatial_dims: int = 2,
                 in_channels: int = 3, out_channels: int = 1) -> None:
        from monai.networks.nets import UNet

        super().__init__()
        if image_size is not None and image_size % 2 ** len(strides):
            raise ValueError(f"image_size {image_size} is not a multiple of {2 ** len(strides)}")
        self._net_args = dict(spatial_dims=spatial_dims, in_channels=in_channels, channels=channels, strides=strides,
                              num_res_units=num_res_units)
        self._default_strides = tuple(strides)
        self.net = UNet(out_channels=out_channels, **self._net_args)
        self.image_size, self.spatial_dims = image_size, spatial_dims
        self.divisor = 2 ** len(strides)
        self._init_plan()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> logits (B, out_channels, *spatial)."""
        return self.net(images)

    @property
    def out_channels(self) -> int:
        return self.net.out_channels

    @property
    def in_channels(self) -> int:
        return self.net.in_channels

    @property
    def levels(self) -> int:
        """Down-samplings between the input and the bottleneck."""
        return len(self._net_args["strides"])

    def _fit_plan(self, plan) -> None:
        """3D: background + the plan's classes as outputs, and the plan's pooling per level (a plan made
        before pooling was planned, or for another depth, keeps 2 on every axis, as it trained)."""
        if self.spatial_dims != 3:
            return
        count = len(plan.classes) + 1
        strides = self._default_strides
        if plan.pool_strides is not None and len(plan.pool_strides) == self.levels:
            strides = tuple(tuple(level) for level in plan.pool_strides)
        if self.out_channels != count or _per_axis(strides) != _per_axis(self._net_args["strides"]):
            from monai.networks.nets import UNet

            self._net_args["strides"] = strides
            device = self.plan_json.device
            self.net = UNet(out_channels=count, **self._net_args).to(device).train(self.training)


def _per_axis(strides) -> list[tuple[int, int, int]]:
    """U-Net strides, each an int or a (z, y, x) triple -> triples (to compare two ways of writing them)."""
    return [tuple(s) if isinstance(s, (tuple, list)) else (int(s),) * 3 for s in strides]


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
