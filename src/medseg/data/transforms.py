"""Training transforms of a sample dict, geometry applied alike to image, mask, boxes and points.

A *sample* is a dict with
    ``image``  float32 (C, H, W), any intensity range (training images come in [0, 1]);
    ``mask``   integer (H, W) label ids, 0 = background; only ever resampled by nearest neighbour;
    ``boxes``  optional float (N, 4) rows of (x0, y0, x1, y1), inclusive pixel coordinates;
    ``points`` optional float (N, K, 2) rows of (x, y) pixel coordinates;
    ``point_labels`` optional int (N, K): 1 positive, 0 negative, -1 padding.
Other keys pass through untouched. Pixel (row y, column x) has its centre at coordinate (x, y).

Geometry: a box becomes the enclosing box of its transformed corners, clipped to the image; a box whose object left the image collapses onto the border (rows are
never removed, so N stays aligned). A point that leaves the image is clipped onto the border and,
when the sample has ``point_labels``, *dropped* by setting its label to -1 (the prompt encoder's
padding label). Regions brought in from outside are filled with each channel's minimum (image)
and 0 (mask). For exact boxes after a rotation, recompute them from the mask
(``medseg.data.prompts.boxes_from_mask``).

These are the fixed transforms; their random counterparts, which draw the parameters and then
apply one of these, and ``Compose`` live in :mod:`medseg.data.augment`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.errors import InputError

SampleDict = dict  # the sample dict of the module docstring


class Transform:
    """A fixed (deterministic) transform: ``sample -> new sample`` (the input dict is not modified)."""

    def __call__(self, sample: SampleDict) -> SampleDict:
        image, mask = np.asarray(sample["image"]), np.asarray(sample["mask"])
        if image.ndim != 3 or mask.shape != image.shape[1:]:
            raise InputError(f"a sample needs image (C, H, W) and mask (H, W) of one size; got image {image.shape} "
                             f"and mask {mask.shape} (move channels first: image.transpose(2, 0, 1))")
        return self.apply(dict(sample))

    def apply(self, sample: SampleDict) -> SampleDict:
        raise NotImplementedError


class GeometricTransform(Transform):
    """Moves pixels; subclasses give ``warp(image, mask)`` and ``map_xy(xy, hw) -> (xy, out_hw)``."""

    outline = 2  # points per box edge pushed through map_xy (2 = the corners)

    def apply(self, sample: SampleDict) -> SampleDict:
        hw = np.shape(sample["mask"])
        sample["image"], sample["mask"] = self.warp(np.asarray(sample["image"], np.float32), np.asarray(sample["mask"]))
        out_h, out_w = sample["mask"].shape
        if sample.get("boxes") is not None:
            b = np.asarray(sample["boxes"], np.float64).reshape(-1, 1, 4)
            gx, gy = np.meshgrid(*[np.linspace(0.0, 1.0, self.outline)] * 2)
            edge = (gx % 1 == 0) | (gy % 1 == 0)  # outline of the unit square, (E, 2) below
            xy, _ = self.map_xy(b[..., :2] + np.stack([gx[edge], gy[edge]], -1) * (b[..., 2:] - b[..., :2]), hw)
            new = np.concatenate([xy.min(1), xy.max(1)], 1)
            sample["boxes"] = np.clip(new, 0, [out_w - 1, out_h - 1] * 2).astype(np.float32)
        if sample.get("points") is not None:
            xy, _ = self.map_xy(np.asarray(sample["points"], np.float64), hw)
            inside = (xy[..., 0] >= 0) & (xy[..., 0] <= out_w - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= out_h - 1)
            sample["points"] = np.clip(xy, 0, [out_w - 1, out_h - 1]).astype(np.float32)
            if sample.get("point_labels") is not None:
                sample["point_labels"] = np.where(inside, sample["point_labels"], -1)
        return sample


class MatrixTransform(GeometricTransform):
    """Geometry given by ``matrix(hw) -> (3x3 on (x, y, 1), out_hw)``; pixels resampled through it."""

    def map_xy(self, xy, hw):
        matrix, out_hw = self.matrix(hw)
        return xy @ matrix[:2, :2].T + matrix[:2, 2], out_hw

    def warp(self, image, mask):
        matrix, out_hw = self.matrix(mask.shape)
        inv = np.linalg.inv(matrix)
        swap = np.array([[0, 1], [1, 0]])  # (x, y) <-> (row, col)
        rc, offset = swap @ inv[:2, :2] @ swap, swap @ inv[:2, 2]
        image = np.stack([ndimage.affine_transform(c, rc, offset, out_hw, order=1, cval=float(c.min()))
                          for c in image]).astype(np.float32)
        mask = ndimage.affine_transform(mask, rc, offset, out_hw, order=0, cval=0)
        return image, mask


class Flip(MatrixTransform):
    """Mirror left-right (``horizontal``: x -> W-1-x) and/or top-bottom (``vertical``: y -> H-1-y)."""

    def __init__(self, horizontal: bool = False, vertical: bool = False) -> None:
        self.horizontal, self.vertical = bool(horizontal), bool(vertical)

    def matrix(self, hw):
        sx, sy = (-1 if self.horizontal else 1), (-1 if self.vertical else 1)
        return np.array([[sx, 0, (hw[1] - 1) * (sx < 0)], [0, sy, (hw[0] - 1) * (sy < 0)], [0, 0, 1.0]]), hw

    def warp(self, image, mask):  # exact, no resampling
        axes = [a for a, on in ((-1, self.horizontal), (-2, self.vertical)) if on]
        return (np.flip(image, axes).copy(), np.flip(mask, axes).copy()) if axes else (image, mask)


class Rot90(MatrixTransform):
    """Rotate by ``k`` quarter turns counter-clockwise as displayed; (H, W) -> (W, H) for odd k."""

    def __init__(self, k: int = 1) -> None:
        self.k = int(k) % 4

    def matrix(self, hw):
        matrix, (h, w) = np.eye(3), hw
        for _ in range(self.k):  # one quarter turn: x' = y, y' = W-1-x
            matrix = np.array([[0, 1, 0], [-1, 0, w - 1], [0, 0, 1.0]]) @ matrix
            h, w = w, h
        return matrix, (h, w)

    def warp(self, image, mask):
        return np.rot90(image, self.k, (-2, -1)).copy(), np.rot90(mask, self.k, (-2, -1)).copy()


class Affine(MatrixTransform):
    """Rotate by ``angle`` degrees (counter-clockwise as displayed) and zoom by ``scale`` (> 1 zooms
    in) about the image centre; the output keeps the input's (H, W)."""

    def __init__(self, angle: float = 0.0, scale: float = 1.0) -> None:
        if scale <= 0:
            raise InputError(f"scale must be positive, got {scale}")
        self.angle, self.scale = float(angle), float(scale)

    def matrix(self, hw):
        c, s = np.cos(np.deg2rad(self.angle)) * self.scale, np.sin(np.deg2rad(self.angle)) * self.scale
        linear = np.array([[c, s], [-s, c]])  # y points down, so this turns counter-clockwise on screen
        centre, matrix = np.array([(hw[1] - 1) / 2, (hw[0] - 1) / 2]), np.eye(3)
        matrix[:2, :2], matrix[:2, 2] = linear, centre - linear @ centre
        return matrix, hw

    def warp(self, image, mask):
        if self.angle == 0 and self.scale == 1:
            return image, mask
        return super().warp(image, mask)


class IntensityTransform(Transform):
    """Changes image values only; ``change(image, low, span)`` gets the image's min and max - min."""

    def apply(self, sample):
        image = np.asarray(sample["image"], np.float32)
        low, span = float(image.min()), float(image.max() - image.min()) or 1.0
        sample["image"] = self.change(image, low, span).astype(np.float32)
        return sample


class Intensity(IntensityTransform):
    """Gamma, then contrast, brightness and Gaussian noise, all relative to the value range
    ``span`` = max - min (so they act alike on [0, 1] or Hounsfield units), then optional clip:

    ``x = low + span * ((x - low) / span) ** gamma``   (keeps the range; > 1 darkens mid-tones)
    ``x = mean + factor * (x - mean)``                (> 1 more contrast)
    ``x = x + shift * span + N(0, (std * span)^2)``   (noise drawn from ``seed``)
    ``x = clip(x, *clip)`` when ``clip`` = (low, high) is given.
    """

    def __init__(self, shift: float = 0.0, factor: float = 1.0, gamma: float = 1.0, std: float = 0.0,
                 seed: int = 0, clip: tuple[float, float] | None = None) -> None:
        self.shift, self.factor, self.gamma, self.std = float(shift), float(factor), float(gamma), float(std)
        self.seed, self.clip = int(seed), clip

    def change(self, image, low, span):
        if self.gamma != 1:
            image = low + span * ((image - low) / span) ** self.gamma
        if self.factor != 1:
            image = image.mean() + self.factor * (image - image.mean())
        image = image + self.shift * span
        if self.std > 0:
            image = image + np.random.default_rng(self.seed).normal(0.0, self.std * span, image.shape)
        return image if self.clip is None else np.clip(image, *self.clip)
