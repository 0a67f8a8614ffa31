"""Default case loader of the evaluation: ``medseg.io`` for every format it reads.

A loader is any callable ``loader(image_path, mask_path) -> (Image, Label)`` (see
:mod:`medseg.io`) that raises :class:`medseg.errors.InputError` for an unreadable file or an
image and mask that do not match. ``evaluate_dataset(loader=...)`` takes one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.io import Image, Label, check_pair, read_image, read_label


def io_loader(image_path: str | Path, mask_path: str | Path) -> tuple[Image, Label]:
    """Read an image and its label map, checked to share one grid."""
    image, label = read_image(image_path), read_label(mask_path)
    check_pair(image, label)
    return image, label


def slice_hwc(image: Image, z: int = 0) -> np.ndarray:
    """Slice ``z`` of an (C, Z, Y, X) image as (H, W) for one channel or (H, W, C)."""
    plane = image.array[:, z]
    return plane[0] if plane.shape[0] == 1 else np.moveaxis(plane, 0, -1)
