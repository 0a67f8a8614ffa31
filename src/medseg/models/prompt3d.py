"""Promptable 3D segmentation on a frozen 2D encoder (3DSAM-adapter's idea, shaped for a 2-core CPU).

The frozen 2D image encoder of a promptable model embeds every slice of a volume once; this head
makes the stack of slice embeddings see in 3D and answers clicks and boxes in voxel coordinates:

* **spatial adapter** (once per volume, :meth:`VolumePromptHead.adapt`): a 1x1x1 projection of the
  256-channel slice embeddings to ``dim`` channels, then blocks of depth-wise 3D convolution over
  (slice, y, x) with a channel bottleneck, each residual and zero-initialised in its last layer, so
  it starts as the projection of the 2D embeddings. The adapter sits after the encoder rather than
  inside each of its blocks: that keeps the encoder's 2D pass untouched and cacheable, so training
  runs on cached embeddings (a CPU cannot afford back-propagating through the encoder per slice).
* **3D prompt encoder** (:func:`prompt_maps`): positive and negative clicks as Gaussians of a fixed
  width in millimetres, a 3D box as a filled block, the previous round's logits, and a 3D positional
  encoding (Fourier features of each cell's offset in millimetres from the first positive click or the
  box centre), all on the token grid; projected and added to the adapted features.
* **3D mask decoder** (:meth:`VolumePromptHead.decode`): a three-scale U-Net of ConvNeXt-style 3D
  blocks on the token grid (pooling in-plane by 2 at each scale, and across slices too where slices are
  thin), then an in-plane x2 up-sampling that reads the image and the previous logits at that scale.
  Where slices are thin (:func:`slice_pooling`: two slices no thicker than 1.5 in-plane cells, e.g.
  la_heart_mri's 0.625 mm against 1.7 mm cells) the decoder works on pairs of slices and interpolates its
  logits back to every slice: half the work per click, at a slice spacing still finer than the cells.

Shapes: embeddings (1, 256, Z, E, E) with E the encoder's token grid (LiteMedSAM: 64 for a 256x256
slice); logits (1, 1, Z, 2E, 2E). Slices are resized so their longest side spans the grid and
zero-padded at the bottom/right (as ``prepare_image``): a volume of (Z, Y, X) voxels maps onto the
first ``Y * E / L`` rows and ``X * E / L`` columns, ``L = max(Y, X)``. Coordinates given to
:func:`prompt_maps` are in token-grid units ``(z, y, x)``, continuous, 0 = the centre of the first cell.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CLICK_SIGMA_MM = 4.0  # width of a click's Gaussian
PE_SCALE_MM = 64.0  # the positional encoding's longest wavelength is 2 pi times this
PE_FREQUENCIES = (1.0, 2.0, 4.0)
PROMPT_CHANNELS = 4 + 3 * 2 * len(PE_FREQUENCIES)  # positive, negative, box, previous logits, positional


class ChannelNorm3d(nn.Module):
    """LayerNorm over the channels of each voxel of a (B, C, Z, Y, X) map: independent of the crop size,
    so a model trained on crops runs on whole volumes."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class Block3d(nn.Module):
    """x + W2 GELU(W1 norm(depth-wise 3x3x3 conv(x))): a ConvNeXt block in 3D; W2 starts at zero."""

    def __init__(self, dim: int, expand: int = 2) -> None:
        super().__init__()
        self.spatial = nn.Conv3d(dim, dim, 3, padding=1, groups=dim)
        self.norm = ChannelNorm3d(dim)
        self.up = nn.Conv3d(dim, dim * expand, 1)
        self.down = nn.Conv3d(dim * expand, dim, 1)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(self.spatial(x)))))


def slice_pooling(spacing_zyx: tuple[float, float, float], cell_mm: float) -> int:
    """How many slices one coarser cell spans: 2 where two slices are no thicker than 1.5 in-plane cells
    (near-isotropic volumes), else 1 (thick slices, e.g. 10 mm cine MR, are never pooled)."""
    return 2 if 2 * spacing_zyx[0] <= 1.5 * cell_mm else 1


class VolumePromptHead(nn.Module):
    """The trainable part of a promptable 3D model; see the module docstring.

    Args:
        embed_dim: channels of the 2D encoder's slice embeddings (256 for SAM-style encoders).
        dim: channels of the adapted 3D features.
        adapter_blocks: 3D blocks of the spatial adapter.
        up_dim: channels at the x2 up-sampled scale.
    """

    def __init__(self, embed_dim: int = 256, dim: int = 48, adapter_blocks: int = 2, up_dim: int = 16) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv3d(embed_dim, dim, 1), ChannelNorm3d(dim))
        self.adapter = nn.Sequential(*[Block3d(dim) for _ in range(adapter_blocks)])
        self.prompt = nn.Conv3d(PROMPT_CHANNELS, dim, 1)
        self.enc0, self.dec0 = Block3d(dim), Block3d(dim)
        self.enc1 = nn.Sequential(Block3d(dim), Block3d(dim))
        self.dec1 = Block3d(dim)
        self.enc2 = nn.Sequential(Block3d(dim), Block3d(dim))
        self.up = nn.ConvTranspose3d(dim, up_dim, (1, 2, 2), stride=(1, 2, 2))
        self.fine = nn.Sequential(nn.Conv3d(up_dim + 2, up_dim, (1, 3, 3), padding=(0, 1, 1)), nn.GELU(),
                                  nn.Conv3d(up_dim, up_dim, (3, 1, 1), padding=(1, 0, 0)), nn.GELU(),
                                  nn.Conv3d(up_dim, 1, 1))

    def adapt(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, 256, Z, E, E) slice embeddings -> (B, dim, Z, E, E) 3D features (prompt-independent)."""
        x = self.project(embeddings.to(self.project[0].weight.dtype))
        return self.adapter(x)

    def decode(self, features: torch.Tensor, maps: torch.Tensor, image2x: torch.Tensor, previous2x: torch.Tensor,
               slice_pool: int = 1) -> torch.Tensor:
        """Logits (B, 1, Z, 2E, 2E) of the prompted object.

        Args:
            features: (B, dim, Z, E, E) from :meth:`adapt`.
            maps: (B, PROMPT_CHANNELS, Z, E, E) from :func:`prompt_maps`.
            image2x: (B, 1, Z, 2E, 2E) the windowed image in 0..1 on the x2 grid.
            previous2x: (B, 1, Z, 2E, 2E) the previous round's logits, or zeros.
            slice_pool: 1 or 2, see :func:`slice_pooling`.
        """
        slices = features.shape[2]
        if slice_pool > 1 and slices > 1:  # thin slices: decode at a coarser slice spacing, then back
            features, maps, image2x, previous2x = (
                F.avg_pool3d(t, (slice_pool, 1, 1), ceil_mode=True) for t in (features, maps, image2x, previous2x))
        x0 = self.enc0(features + self.prompt(maps))
        x1 = self.enc1(_pool(x0, slice_pool))
        x2 = self.enc2(_pool(x1, slice_pool))
        x1 = self.dec1(x1 + F.interpolate(x2, size=x1.shape[2:], mode="trilinear", align_corners=False))
        x0 = self.dec0(x0 + F.interpolate(x1, size=x0.shape[2:], mode="trilinear", align_corners=False))
        fine = torch.cat([F.gelu(self.up(x0)), image2x, _squash(previous2x)], dim=1)
        logits = self.fine(fine)
        if logits.shape[2] != slices:
            logits = F.interpolate(logits, size=(slices, *logits.shape[3:]), mode="trilinear", align_corners=False)
        return logits


def _pool(x: torch.Tensor, slice_pool: int) -> torch.Tensor:
    """Average 2 x 2 cells in-plane and ``slice_pool`` slices (fewer where the map is thinner), rounding up."""
    kernel = (min(slice_pool, x.shape[2]), min(2, x.shape[3]), min(2, x.shape[4]))
    return F.avg_pool3d(x, kernel, ceil_mode=True)


def _squash(logits: torch.Tensor) -> torch.Tensor:
    """Logits to about -1..1 (a prompt channel): tanh(logits / 4)."""
    return torch.tanh(logits / 4)


def gaussians(points: torch.Tensor, shape: tuple[int, int, int], sigma_cells: torch.Tensor) -> torch.Tensor:
    """(Z, Y, X) map of the maximum over ``points`` (K, 3) (z, y, x grid units) of unit Gaussians whose
    standard deviation is ``sigma_cells`` (3,) per axis; zeros when K = 0."""
    out = torch.zeros(shape)
    if len(points) == 0:
        return out
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    for p in points:
        # separable: exp(-(dz^2 + dy^2 + dx^2)/2) = product of three 1D profiles
        gz, gy, gx = (torch.exp(-0.5 * ((a - c) / s) ** 2) for a, c, s in zip(axes, p, sigma_cells))
        out = torch.maximum(out, gz[:, None, None] * gy[None, :, None] * gx[None, None, :])
    return out


def prompt_maps(shape: tuple[int, int, int], cell_mm: tuple[float, float, float], points: torch.Tensor,
                labels: torch.Tensor, box: torch.Tensor | None, previous: torch.Tensor | None) -> torch.Tensor:
    """The prompt channels (PROMPT_CHANNELS, Z, E, E) on the token grid.

    Args:
        shape: (Z, E, E) of the grid.
        cell_mm: (z, y, x) size of one grid cell in millimetres.
        points: (K, 3) clicks (z, y, x) in grid units; labels (K,) 1 positive, 0 negative.
        box: (6,) z0, y0, x0, z1, y1, x1 in grid units (inclusive corners), or None.
        previous: (Z, E, E) previous logits pooled to the grid, or None.
    """
    cell = torch.tensor(cell_mm, dtype=torch.float32)
    sigma = torch.clamp(CLICK_SIGMA_MM / cell, min=0.7)
    points, labels = points.float().reshape(-1, 3), labels.reshape(-1)
    positive, negative = gaussians(points[labels == 1], shape, sigma), gaussians(points[labels == 0], shape, sigma)
    block = torch.zeros(shape)
    if box is not None:
        lo = torch.clamp(torch.floor(box[:3] + 0.5).long(), min=0)
        hi = torch.ceil(box[3:] - 0.5).long()
        block[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = 1
        anchor = (box[:3] + box[3:]) / 2
    elif bool((labels == 1).any()):
        anchor = points[labels == 1][0]
    else:
        anchor = points[0] if len(points) else torch.tensor(shape, dtype=torch.float32) / 2
    grid = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    encodings = []
    for axis in range(3):
        offset = (grid[axis] - anchor[axis]) * cell[axis] / PE_SCALE_MM
        for f in PE_FREQUENCIES:
            encodings += [torch.sin(f * offset), torch.cos(f * offset)]
    prev = torch.zeros(shape) if previous is None else _squash(previous.float())
    return torch.stack([positive, negative, block, prev, *encodings])


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())



class SliceGrid:
    """Where a (Z, Y, X) volume of spacing (sz, sy, sx) mm lands on the encoder's token grid.

    Each slice is resized so its longest side spans ``size`` model-input pixels (``resized_hw`` = (h, w),
    as ``prepare_image``) and padded bottom/right; the token grid has ``E = size / 4`` cells a side and the
    decoder's output grid ``2E``. Voxel centre y sits at model-input pixel ``(y + 0.5) * h / Y``.
    """

    def __init__(self, shape_zyx: tuple[int, int, int], spacing_zyx: tuple[float, float, float], size: int,
                 resized_hw: tuple[int, int]) -> None:
        self.shape, self.spacing, self.size = tuple(int(n) for n in shape_zyx), tuple(float(s) for s in spacing_zyx), size
        self.resized_hw = tuple(int(n) for n in resized_hw)
        self.tokens = size // 4
        z, y, x = self.shape
        self.pixel_mm = (self.spacing[1] * y / self.resized_hw[0], self.spacing[2] * x / self.resized_hw[1])
        self.cell_mm = (self.spacing[0], 4 * self.pixel_mm[0], 4 * self.pixel_mm[1])
        self.slice_pool = slice_pooling(self.spacing, min(self.cell_mm[1:]))

    def valid_tokens(self) -> tuple[int, int]:
        """(rows, columns) of token cells that hold some of the slice (the rest is padding)."""
        return tuple(min(self.tokens, math.ceil(n / 4)) for n in self.resized_hw)

    def to_tokens(self, zyx: torch.Tensor) -> torch.Tensor:
        """(K, 3) voxel indices (z, y, x) -> (K, 3) continuous token-grid coordinates (z, y, x)."""
        zyx = torch.as_tensor(zyx, dtype=torch.float32).reshape(-1, 3)
        z, y, x = self.shape
        h, w = self.resized_hw
        return torch.stack([zyx[:, 0], (zyx[:, 1] + 0.5) * h / y / 4 - 0.5, (zyx[:, 2] + 0.5) * w / x / 4 - 0.5], 1)

    def fine_cells(self, lo_zyx, hi_zyx) -> tuple[slice, slice, slice]:
        """The cells (z, y, x) of the decoder's output grid that cover the voxel box ``lo_zyx`` ..
        ``hi_zyx`` (inclusive voxel indices)."""
        z, y, x = self.shape
        h, w = self.resized_hw
        rows = slice(math.floor(lo_zyx[1] * h / y / 2), math.ceil((hi_zyx[1] + 1) * h / y / 2))
        cols = slice(math.floor(lo_zyx[2] * w / x / 2), math.ceil((hi_zyx[2] + 1) * w / x / 2))
        return slice(int(lo_zyx[0]), int(hi_zyx[0]) + 1), rows, cols

    def to_fine(self, volume: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """(Z, Y, X) voxels -> (Z, 2E, 2E) on the decoder's output grid (``mode``: bilinear for an image,
        area for a mask's fraction of each cell), zero-padded bottom/right."""
        h, w = (max(1, round(n / 2)) for n in self.resized_hw)
        v = volume.float()[:, None]
        kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
        out = F.interpolate(v, size=(h, w), mode=mode, **kwargs)[:, 0]
        return F.pad(out, (0, 2 * self.tokens - w, 0, 2 * self.tokens - h))

    def to_voxels(self, fine: torch.Tensor) -> torch.Tensor:
        """(Z, 2E, 2E) values on the output grid -> (Z, Y, X) at the voxel centres (bilinear in-plane; the
        inverse of :meth:`to_fine`'s geometry, never reading the padding)."""
        z, y, x = self.shape
        n = 2 * self.tokens

        def coordinates(voxels: int, cells: int) -> torch.Tensor:  # voxel centres in -1..1 of the n cells
            centre = ((torch.arange(voxels, dtype=torch.float32) + 0.5) * cells / voxels - 0.5).clamp(0, cells - 1)
            return (centre + 0.5) / n * 2 - 1

        h, w = (max(1, round(v / 2)) for v in self.resized_hw)
        grid = torch.stack(torch.meshgrid(coordinates(y, h), coordinates(x, w), indexing="ij")[::-1], -1)  # (x, y)
        out = F.grid_sample(fine.float()[:, None], grid[None].expand(z, y, x, 2), mode="bilinear",
                            align_corners=False)
        return out[:, 0]


class Promptable3D(nn.Module):
    """A promptable 2D model whose frozen image encoder embeds each slice (``base``), and the trainable
    :class:`VolumePromptHead` that segments the volume from clicks and boxes (``volume_head``)."""

    def __init__(self, base: nn.Module, head: VolumePromptHead) -> None:
        super().__init__()
        self.base, self.volume_head = base, head
        self.image_size = base.image_size
        self.trained_modalities: tuple[str, ...] = ()  # of the volumes the head trained on; () unknown

    def head_fraction(self) -> float:
        """Share of the parameters that the head holds (the part that trains)."""
        return parameter_count(self.volume_head) / parameter_count(self)
