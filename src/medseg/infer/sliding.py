"""Automatic 3D segmentation with a planned volumetric model: preprocess, sliding window, back to the grid.

    model = build_model("unet3d", checkpoint="run/best.safetensors")   # its plan travels in the weights
    labels = segment_volume_auto(model, read_image("la_003.nii.gz"))    # (Z, Y, X) class ids, input grid

The volume is cropped, resampled and normalised by the model's :class:`~medseg.data.planning.Plan`,
covered by patches of the plan's size with half-patch overlap and Gaussian weighting (MONAI's
``sliding_window_inference``; optional mirroring test-time augmentation averages the flipped
predictions), turned into class ids by arg-max and put back on the input's grid by nearest neighbour; the
classes the plan names in ``keep_largest`` then keep only their largest connected component.
"""

from __future__ import annotations

import numpy as np
import torch

from medseg.data.masks import keep_largest
from medseg.data.planning import preprocess, restore_label
from medseg.errors import InputError


def sliding_logits(model: torch.nn.Module, x: torch.Tensor, patch: tuple[int, int, int], overlap: float = 0.5,
                   mirror: bool = False, batch: int = 1) -> torch.Tensor:
    """x (1, C, Z, Y, X) preprocessed -> logits (1, K + 1, Z, Y, X), patches of ``patch`` (Gaussian-weighted
    overlap); ``mirror`` averages the predictions of the 8 flips of the three axes (undone)."""
    from monai.inferers import sliding_window_inference

    def run(volume: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(volume, roi_size=patch, sw_batch_size=batch, predictor=model,
                                        overlap=overlap, mode="gaussian", padding_mode="constant")

    if not mirror:
        return run(x)
    flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    return sum(run(x.flip(dims)).flip(dims) for dims in flips) / len(flips)


@torch.no_grad()
def segment_volume_auto(model: torch.nn.Module, image, mirror: bool = False,
                        device: str | torch.device | None = None, postprocess: bool = True) -> np.ndarray:
    """An :class:`~medseg.io.Image` (C, Z, Y, X) -> (Z, Y, X) label map of the plan's class ids on the input's
    grid, each class of the plan's ``keep_largest`` reduced to its largest connected component (unless
    ``postprocess`` is False; :func:`medseg.eval.postprocess.decide_keep_largest` decides them on val).
    InputError when the model carries no plan (train it with the 'volume' objective)."""
    plan = getattr(model, "plan", None)
    if plan is None:
        raise InputError("this model carries no 3D plan: train it with the 'volume' objective "
                         "(`medseg train configs/unet3d_hippocampus.yaml`) or give its --checkpoint")
    if image.array.shape[0] != model.in_channels:
        raise InputError(f"{image.meta.source or 'the volume'}: has {image.array.shape[0]} channel(s); the model "
                         f"was trained on {model.in_channels}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    x, _, record = preprocess(image, None, plan)
    logits = sliding_logits(model, torch.from_numpy(x)[None].to(device), plan.patch_size, mirror=mirror)
    index = logits.argmax(1)[0].cpu().numpy()
    ids = np.array([0, *plan.classes], dtype=np.int64)
    labels = restore_label(ids[index], record)
    return keep_largest(labels, plan.keep_largest) if postprocess and plan.keep_largest else labels
