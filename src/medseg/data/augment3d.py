"""Random 3D augmentation of training patches: draw the parameters, then apply the fixed transform.

As in :mod:`medseg.data.augment` (2D), :meth:`RandomPatch3D.draw` returns a small dict of parameters and
:func:`extract_patch` is the fixed transform they describe, so a patch is reproducible from its draw:

* spatial, sampled straight from the whole volume around the patch centre (no black corners from
  rotating an already-cut patch): a rotation (about every axis, or only in-plane, about the coarse
  axis, for thick-slice plans), an isotropic zoom, a smooth elastic displacement (a coarse random field
  upsampled to the patch), and mirroring of each axis. Images are sampled trilinearly, labels by nearest
  neighbour; past the volume's edges the image is 0 (the normalised mean) and the label background;
* intensity, on the image patch only: multiplicative brightness, contrast about the patch mean, gamma
  (on the patch rescaled to [0, 1], then back), Gaussian noise.

Arrays are (C, Z, Y, X) images and (Z, Y, X) labels; points and angles are in (z, y, x) order.
The default probabilities and ranges are nnU-Net's usual ones (rotation and zoom each in a fifth of the
patches, elastic in a tenth), so most patches stay close to the data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class RandomPatch3D:
    """Draws the parameters of one augmented patch (see the module docstring).

    Args:
        in_plane_axis: None to rotate about all three axes; an axis index (e.g. 0 for thick z slices)
            to rotate only about that axis, in the plane of the other two.
    """

    def __init__(self, degrees: float = 30.0, p_rotate: float = 0.2, scales: tuple[float, float] = (0.7, 1.4),
                 p_scale: float = 0.2, elastic_voxels: float = 4.0, p_elastic: float = 0.1, p_flip: float = 0.5,
                 p_intensity: float = 0.15, gamma: tuple[float, float] = (0.7, 1.5), p_gamma: float = 0.3,
                 noise_std: float = 0.1, p_noise: float = 0.1, in_plane_axis: int | None = None) -> None:
        self.degrees, self.p_rotate, self.scales, self.p_scale = degrees, p_rotate, scales, p_scale
        self.elastic_voxels, self.p_elastic, self.p_flip = elastic_voxels, p_elastic, p_flip
        self.p_intensity, self.gamma, self.p_gamma = p_intensity, gamma, p_gamma
        self.noise_std, self.p_noise, self.in_plane_axis = noise_std, p_noise, in_plane_axis

    def draw(self, rng: np.random.Generator) -> dict:
        """-> {"angles": [az, ay, ax] radians, "scale", "elastic": (3, 4, 4, 4) voxels or None, "flips":
        [axes], "brightness", "contrast", "gamma", "noise_std", "noise_seed"}; identity values where a
        draw is off."""
        limit = math.radians(self.degrees)
        angles = [0.0, 0.0, 0.0]
        if rng.random() < self.p_rotate:
            axes = [self.in_plane_axis] if self.in_plane_axis is not None else [0, 1, 2]
            for a in axes:
                angles[a] = float(rng.uniform(-limit, limit))
        scale = float(np.exp(rng.uniform(*np.log(self.scales)))) if rng.random() < self.p_scale else 1.0
        elastic = None
        if rng.random() < self.p_elastic:
            elastic = rng.normal(0.0, self.elastic_voxels / 2, size=(3, 4, 4, 4)).astype(np.float32)
            if self.in_plane_axis is not None:
                elastic[self.in_plane_axis] = 0.0
        flips = [a for a in range(3) if rng.random() < self.p_flip]
        brightness = float(rng.uniform(0.75, 1.25)) if rng.random() < self.p_intensity else 1.0
        contrast = float(rng.uniform(0.75, 1.25)) if rng.random() < self.p_intensity else 1.0
        gamma = float(rng.uniform(*self.gamma)) if rng.random() < self.p_gamma else 1.0
        noise = float(rng.uniform(0.0, self.noise_std)) if rng.random() < self.p_noise else 0.0
        return {"angles": angles, "scale": scale, "elastic": elastic, "flips": flips, "brightness": brightness,
                "contrast": contrast, "gamma": gamma, "noise_std": noise, "noise_seed": int(rng.integers(2**31))}


def rotation_matrix(angles) -> np.ndarray:
    """(3, 3) rotation in (z, y, x) coordinates: about z by ``angles[0]``, then y, then x (radians)."""
    out = np.eye(3)
    for axis, angle in enumerate(angles):
        if angle:
            i, j = [a for a in range(3) if a != axis]
            r = np.eye(3)
            c, s = math.cos(angle), math.sin(angle)
            r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
            out = r @ out
    return out


def source_points(centre, patch, params: dict) -> np.ndarray:
    """Where each voxel of the output patch is read in the volume: (3, pz, py, px) float (z, y, x) voxel
    coordinates, from the patch offsets (``centre`` at index (p - 1) // 2) zoomed by 1 / scale, rotated,
    elastically displaced, then mirrored and moved to ``centre``."""
    offsets = np.stack(np.meshgrid(*[np.arange(p, dtype=np.float64) - (p - 1) // 2 for p in patch], indexing="ij"))
    points = np.einsum("ij,j...->i...", rotation_matrix(params["angles"]), offsets / params["scale"])
    if params["elastic"] is not None:
        field = torch.from_numpy(params["elastic"])[None]
        points = points + F.interpolate(field, size=tuple(patch), mode="trilinear", align_corners=True)[0].numpy()
    for axis in params["flips"]:
        points[axis] = np.flip(points[axis], axis)
    return points + np.asarray(centre, dtype=np.float64).reshape(3, 1, 1, 1)


def _is_plain(params: dict) -> bool:
    return not any(params["angles"]) and params["scale"] == 1.0 and params["elastic"] is None


def crop_patch(array: np.ndarray, centre, patch) -> np.ndarray:
    """The ``patch``-sized block of ``array`` (..., Z, Y, X) with voxel ``centre`` at index (p - 1) // 2 of
    each side (as :func:`source_points` places it), zero past the edges."""
    out = np.zeros(array.shape[:-3] + tuple(patch), dtype=array.dtype)
    src, dst = [], []
    for c, p, n in zip(centre, patch, array.shape[-3:]):
        start = int(c) - (p - 1) // 2
        lo, hi = max(start, 0), min(start + p, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(..., *dst)] = array[(..., *src)]
    return out


def extract_patch(image: np.ndarray, label: np.ndarray, centre, patch, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """The fixed transform: image (C, Z, Y, X) float32 and label (Z, Y, X) -> the augmented patch
    (C, pz, py, px) float32 and (pz, py, px) label of ``label``'s dtype, centred at voxel ``centre``."""
    patch = tuple(int(p) for p in patch)
    if _is_plain(params):  # a crop and flips: exact, and ten times cheaper than resampling
        x, y = crop_patch(image, centre, patch), crop_patch(label, centre, patch)
        if params["flips"]:
            x = np.flip(x, [a + 1 for a in params["flips"]])
            y = np.flip(y, params["flips"])
    else:
        points = source_points(centre, patch, params)
        shape = np.asarray(label.shape, dtype=np.float64).reshape(3, 1, 1, 1)
        nearest = np.rint(points).astype(np.int64)
        inside = np.all((nearest >= 0) & (nearest < shape), axis=0)
        y = np.zeros(patch, dtype=label.dtype)
        y[inside] = label[tuple(n[inside] for n in nearest)]
        grid = (2 * points / np.maximum(shape - 1, 1) - 1)[::-1]  # grid_sample wants (x, y, z) in [-1, 1]
        grid = torch.from_numpy(np.ascontiguousarray(np.moveaxis(grid, 0, -1), dtype=np.float32))[None]
        x = F.grid_sample(torch.from_numpy(np.ascontiguousarray(image))[None], grid, mode="bilinear",
                          padding_mode="zeros", align_corners=True)[0].numpy()
    return intensity(np.ascontiguousarray(x, dtype=np.float32), params), np.ascontiguousarray(y)


def intensity(x: np.ndarray, params: dict) -> np.ndarray:
    """Brightness, contrast, gamma and noise of ``params`` on an image patch (C, ...) float32."""
    if params["brightness"] != 1.0:
        x = x * params["brightness"]
    if params["contrast"] != 1.0:
        mean = x.mean()
        x = (x - mean) * params["contrast"] + mean
    if params["gamma"] != 1.0:
        lo, hi = float(x.min()), float(x.max())
        if hi > lo:
            x = ((x - lo) / (hi - lo)) ** params["gamma"] * (hi - lo) + lo
    if params["noise_std"]:
        noise = np.random.default_rng(params["noise_seed"]).normal(0.0, params["noise_std"], x.shape)
        x = x + noise.astype(np.float32)
    return x.astype(np.float32, copy=False)
