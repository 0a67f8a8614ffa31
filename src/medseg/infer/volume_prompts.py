"""Clicks and boxes in a volume: encode once (:meth:`VolumePredictor.set_volume`), prompt many times.

    predictor = VolumePredictor(build_model("litemedsam-3d", pretrained=True))
    predictor.set_volume(volume, spacing_zyx=(0.625, 0.625, 0.625), modality="MR")   # (Z, Y, X)
    first = predictor.predict(points=[[87, 66, 40]], point_labels=[1])   # (x, y, z) voxel indices
    better = predictor.predict(points=[[87, 66, 40], [90, 50, 44]], point_labels=[1, 0],
                               mask_input=first.logits)

Coordinates are voxel indices in ``(x, y, z)`` order (as the 2D predictor's ``(x, y)``), boxes
``(x0, y0, z0, x1, y1, z1)`` inclusive. The volume is windowed once (``window_volume``), each slice
goes through the frozen 2D encoder exactly as ``Predictor.set_image`` would prepare it (longest side
to the model's input size, min-max scaled, padded), with the predictor's engine and precision
(``engine="openvino", precision="bf16"`` runs LiteMedSAM's encoder about 3x faster on a CPU with
AMX). Where slices are thin, only every other slice is encoded and the ones between get interpolated
embeddings (:meth:`VolumePredictor.slice_step`; ``every_slice=True`` encodes them all). The 3D head
(:mod:`medseg.models.prompt3d`) then adapts the stack once and decodes each prompt.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.preprocess import longest_side_shape, prepare_image
from ..errors import InputError
from ..models.prompt3d import Promptable3D, SliceGrid, prompt_maps
from .predictor import Predictor, default_device
from .volume import check_box3d, walk_slices, window_volume


PADDING_LOGIT = -20.0
"""The logit given to the output cells over the slices' padding (never decoded)."""


@dataclass
class VolumePrediction:
    """One prompt's answer: ``mask`` (Z, Y, X) bool, ``logits`` (Z, 2E, 2E) float32 on the decoder's grid
    (hand it back as ``mask_input`` with the next click)."""

    mask: np.ndarray
    logits: np.ndarray


def volume_window(modality: str | None) -> str:
    """The intensity window of a volume: CT's Hounsfield window for CT, else the robust percentile window
    (0.5-99.5, as MR's), so an unknown modality is not min-max scaled by a few outlier voxels."""
    return "CT" if (modality or "").upper() == "CT" else "MR"


@torch.no_grad()
def encode_slices(encoder, scaled: np.ndarray, size: int, progress: bool = False, step: int = 1) -> torch.Tensor:
    """(Z, Y, X) windowed volume in 0..255 -> (Z, 256, E, E) float32 slice embeddings, one slice at a time
    (``encoder.encode_features``: a model or an engine's graph). With ``step`` > 1 only every ``step``-th
    slice and the last are encoded and the slices between them get the embeddings linearly interpolated
    along z (:func:`encoded_slices`)."""
    kept = encoded_slices(scaled.shape[0], step)
    out = []
    for z in tqdm(kept, desc="encode slices", unit="slice", disable=not progress, leave=False):
        x, _ = prepare_image(scaled[z], size)
        out.append(encoder.encode_features(x)[0].float().cpu())
    return interpolate_slices(torch.cat(out), kept, scaled.shape[0])


def encoded_slices(slices: int, step: int) -> list[int]:
    """The slice indices :func:`encode_slices` encodes: 0, step, 2 step, ... and the last."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    return sorted(set(range(0, slices, step)) | {slices - 1})


def interpolate_slices(embeddings: torch.Tensor, kept: list[int], slices: int) -> torch.Tensor:
    """(K, C, E, E) embeddings of the slices ``kept`` (ascending, first 0, last ``slices - 1``) ->
    (slices, C, E, E), each missing slice the linear interpolation of its two encoded neighbours."""
    if len(kept) == slices:
        return embeddings
    index = torch.as_tensor(kept)
    z = torch.arange(slices)
    upper = torch.searchsorted(index, z).clamp(max=len(kept) - 1)  # first kept slice >= z
    lower = torch.where(index[upper] == z, upper, upper - 1)
    span = (index[upper] - index[lower]).clamp(min=1)
    w = ((z - index[lower]) / span).to(embeddings.dtype).view(-1, 1, 1, 1)
    return (1 - w) * embeddings[lower] + w * embeddings[upper]


def _check_volume(volume, spacing_zyx) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A (Z, Y, X) array and three positive finite spacings in mm, or InputError."""
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise InputError(f"expected a (Z, Y, X) volume, got shape {volume.shape}")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputError(f"spacing must be three positive millimetre values (z, y, x), got {spacing_zyx!r}")
    return volume, spacing


class VolumePredictor:
    """Encode a volume once with a :class:`~medseg.models.prompt3d.Promptable3D`, then answer clicks and
    boxes in voxel coordinates. ``engine``/``precision``/``threads`` choose how the slice encoder runs
    (as :class:`~medseg.infer.Predictor`); the 3D head runs in torch. ``every_slice`` encodes every slice
    even where :meth:`slice_step` would skip every other one."""

    def __init__(self, model: Promptable3D, device: str | torch.device | None = None, engine: str = "torch",
                 precision: str = "fp32", threads: int | None = None, every_slice: bool = False,
                 box_bounds: bool = True) -> None:
        if not isinstance(model, Promptable3D):
            raise InputError(f"a volume predictor needs a promptable 3D model (e.g. litemedsam-3d), got "
                             f"{type(model).__name__}")
        self.slices = Predictor(model.base, device, engine=engine, precision=precision, threads=threads)
        self.device = self.slices.device if engine == "torch" else (torch.device(device) if device else default_device())
        self.head = model.volume_head.to(self.device).eval()
        # NDHWC on the CPU: oneDNN's channels-last 3D kernels, and the channel norms permute without copying
        self.memory_format = torch.channels_last_3d if self.device.type == "cpu" else torch.contiguous_format
        self.head = self.head.to(memory_format=self.memory_format)
        self.size = model.image_size
        self.every_slice, self.box_bounds = every_slice, box_bounds
        self.trained_modalities = model.trained_modalities
        self.grid: SliceGrid | None = None
        self.features = self.image = None

    def slice_step(self, shape_zyx: tuple[int, int, int], spacing_zyx: tuple[float, float, float]) -> int:
        """Every how many slices the encoder runs: 1 with ``every_slice``, else the 3D decoder's slice pooling
        (2 where slices are thin, :func:`~medseg.models.prompt3d.slice_pooling`: the decoder averages pairs
        of slices there anyway, so the slices between two encoded ones get interpolated embeddings, at half
        the encoding time)."""
        if self.every_slice:
            return 1
        return SliceGrid(shape_zyx, spacing_zyx, self.size, longest_side_shape(shape_zyx[1:], self.size)).slice_pool

    def encode(self, volume: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0), modality: str | None = None,
               progress: bool = False) -> torch.Tensor:
        """(Z, Y, X) volume -> its (Z, 256, E, E) float32 slice embeddings, as :meth:`set_volume` makes them
        (every :meth:`slice_step`-th slice encoded)."""
        volume, spacing = _check_volume(volume, spacing_zyx)
        return self._encode(window_volume(volume, volume_window(modality)), spacing, progress)

    def _encode(self, scaled: np.ndarray, spacing: tuple[float, float, float], progress: bool) -> torch.Tensor:
        return encode_slices(self.slices.model, scaled, self.size, progress, self.slice_step(scaled.shape, spacing))

    def set_volume(self, volume: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0), modality: str | None = None,
                   progress: bool = False, embeddings: torch.Tensor | None = None) -> None:
        """volume: (Z, Y, X) of any numeric dtype; spacing in mm (z, y, x); ``modality`` picks the intensity
        window (:func:`volume_window`). ``embeddings`` (Z, 256, E, E), from an earlier :func:`encode_slices`
        of the same volume (:meth:`encode`), skips the encoder."""
        volume, spacing = _check_volume(volume, spacing_zyx)
        self._check_modality(modality)
        scaled = window_volume(volume, volume_window(modality))
        if embeddings is None:
            embeddings = self._encode(scaled, spacing, progress)
        elif embeddings.shape[0] != volume.shape[0]:
            raise InputError(f"{embeddings.shape[0]} slice embeddings for a volume of {volume.shape[0]} slices")
        self.grid = SliceGrid(volume.shape, spacing, self.size, longest_side_shape(volume.shape[1:], self.size))
        with torch.no_grad():
            emb = embeddings.to(self.device).permute(1, 0, 2, 3)[None]  # (1, 256, Z, E, E)
            self.features = self.head.adapt(emb.contiguous(memory_format=self.memory_format))
            self.image = self._on_device(self.grid.to_fine(torch.from_numpy(scaled) / 255.0)[None, None])

    @torch.no_grad()
    def predict(self, points=None, point_labels=None, box=None, mask_input=None) -> VolumePrediction:
        """Segment one object.

        Args:
            points: (K, 3) voxel indices (x, y, z); point_labels: (K,) 1 object, 0 background.
            box: (x0, y0, z0, x1, y1, z1) voxel indices, inclusive. A box bounds its object: the mask and the
                logits outside it (grown to hold any positive click) are background (on the val splits this
                lifted box Dice by 0.005-0.18: README, 'Clicks in a volume'); ``box_bounds=False`` at
                construction leaves the head's answer unbounded.
            mask_input: (Z, 2E, 2E) logits of an earlier prediction (:attr:`VolumePrediction.logits`).
        """
        if self.grid is None:
            raise RuntimeError("call set_volume(volume) before predict()")
        shape = self.grid.shape
        zyx, labels = self._check_points(points, point_labels, shape)
        if box is None and len(zyx) == 0:
            raise InputError("give at least one click or a 3D box")
        box_tokens = None
        if box is not None:
            x0, y0, z0, x1, y1, z1 = check_box3d(box, shape)
            box_voxels = ((z0, y0, x0), (z1, y1, x1))
            box_tokens = self.grid.to_tokens([[z0, y0, x0], [z1, y1, x1]]).reshape(6)
        e = self.grid.tokens
        previous = torch.zeros(shape[0], 2 * e, 2 * e)
        if mask_input is not None:
            previous = torch.as_tensor(np.asarray(mask_input), dtype=torch.float32)
            if previous.shape != (shape[0], 2 * e, 2 * e):
                raise InputError(f"mask_input must be the (Z, {2 * e}, {2 * e}) logits of an earlier prediction, "
                                 f"got shape {tuple(previous.shape)}")
        pooled = torch.nn.functional.avg_pool2d(previous[:, None], 2)[:, 0]
        rows, cols = self.grid.valid_tokens()  # the padding right/bottom of the slices is left out
        maps = prompt_maps((shape[0], rows, cols), self.grid.cell_mm, self.grid.to_tokens(zyx), labels, box_tokens,
                           pooled[:, :rows, :cols] if mask_input is not None else None)
        logits = torch.full((shape[0], 2 * e, 2 * e), PADDING_LOGIT)
        logits[:, :2 * rows, :2 * cols] = self.head.decode(
            self.features[..., :rows, :cols], self._on_device(maps[None]), self.image[..., :2 * rows, :2 * cols],
            self._on_device(previous[None, None, :, :2 * rows, :2 * cols]), self.grid.slice_pool)[0, 0].float().cpu()
        mask = self.grid.to_voxels(logits) > 0
        if box is not None and self.box_bounds:  # a box bounds its object (with any positive click outside it)
            lo, hi = _bounds(box_voxels, zyx[labels == 1])
            inside = torch.full_like(logits, PADDING_LOGIT)
            cells = self.grid.fine_cells(lo, hi)
            inside[cells] = logits[cells]
            logits = inside
            keep = torch.zeros_like(mask)
            keep[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
            mask &= keep
        return VolumePrediction(mask.numpy(), logits.numpy())

    def _check_modality(self, modality: str | None) -> None:
        """A warning for a volume of a modality the head never trained on (a file that names none passes)."""
        trained = self.trained_modalities
        if modality and trained and str(modality).upper() not in trained:
            warnings.warn(f"this 3D head trained on {', '.join(trained)} volumes only and this volume is {modality}: "
                          f"its clicks may segment worse than the 2D model slice by slice (--model litemedsam); on a "
                          f"CT volume they did (README, 'Clicks in a volume')", stacklevel=3)

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=self.memory_format)

    @staticmethod
    def _check_points(points, labels, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, 3) x, y, z + (K,) labels -> (K, 3) z, y, x voxel indices and labels, checked."""
        if points is None:
            if labels is not None:
                raise InputError("point_labels given without points")
            return torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3) if np.size(points) else np.zeros((0, 3))
        lab = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
        if len(lab) != len(pts):
            raise InputError(f"{len(pts)} points but {len(lab)} point labels")
        if not np.isin(lab, (0, 1)).all():
            raise InputError(f"point labels must be 1 (object) or 0 (background), got {sorted(set(lab.tolist()))}")
        z, y, x = shape
        outside = [p.tolist() for p in pts if not (0 <= p[0] < x and 0 <= p[1] < y and 0 <= p[2] < z)]
        if outside or not np.isfinite(pts).all():
            raise InputError(f"points {outside or pts.tolist()} lie outside the volume of {x}x{y}x{z} (X x Y x Z) "
                             f"voxels; give (x, y, z) voxel indices")
        return torch.from_numpy(pts[:, ::-1].copy()).float(), torch.from_numpy(lab)


def _bounds(box_zyx, clicks_zyx: torch.Tensor) -> tuple[list[int], list[int]]:
    """The inclusive voxel bounds (z, y, x) of a box ``((z0, y0, x0), (z1, y1, x1))`` grown to hold every
    positive click (K, 3) too."""
    lo, hi = [int(v) for v in box_zyx[0]], [int(v) for v in box_zyx[1]]
    for click in np.round(clicks_zyx.numpy()).astype(int):
        lo, hi = [min(a, int(c)) for a, c in zip(lo, click)], [max(a, int(c)) for a, c in zip(hi, click)]
    return lo, hi


class SliceWisePredictor:
    """A promptable 2D model used slice by slice behind the volume predictor's interface, so the two compare
    under one protocol (:mod:`medseg.eval.interactive3d`).

    Each :meth:`predict` starts from the prompts alone: the seed slice (the first positive click's slice,
    or the middle slice of a 3D box) is segmented from its clicks (and the box), then the mask walks
    outwards (:func:`~medseg.infer.volume.walk_slices`' rule: each next slice prompted with the box of the
    previous slice's mask, plus that slice's own clicks; within the 3D box's slices when there is one)
    until it runs out; a positive click on a slice the walk did not reach seeds a walk of its own.
    ``mask_input`` is accepted and not needed (the prompts say everything); ``logits`` of the answer is
    the mask as +1/-1 on the voxel grid. Slice encodings are kept until the next :meth:`set_volume`.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.scaled: np.ndarray | None = None
        self.encodings: dict[int, tuple] = {}

    def set_volume(self, volume: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0), modality: str | None = None,
                   progress: bool = False) -> None:
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise InputError(f"expected a (Z, Y, X) volume, got shape {volume.shape}")
        self.scaled, self.encodings = window_volume(volume, volume_window(modality)), {}

    def _slice(self, z: int, box, clicks: list) -> np.ndarray:
        if z not in self.encodings:
            self.predictor.set_image(self.scaled[z])
            self.encodings[z] = self.predictor.encoding
        self.predictor.set_encoding(self.encodings[z])
        kwargs = {} if box is None else {"box": np.asarray(box, dtype=np.float64)}
        if clicks:
            kwargs.update(points=np.array([c[:2] for c in clicks], dtype=np.float64)[None],
                          point_labels=np.array([c[2] for c in clicks])[None])
        lone = box is None and len(clicks) == 1
        out = self.predictor.predict(multimask=lone, **kwargs)
        return out.masks[0, int(np.argmax(out.scores[0]))].astype(bool)

    def predict(self, points=None, point_labels=None, box=None, mask_input=None) -> VolumePrediction:
        if self.scaled is None:
            raise RuntimeError("call set_volume(volume) before predict()")
        shape = self.scaled.shape
        zyx, labels = VolumePredictor._check_points(points, point_labels, shape)
        per_slice: dict[int, list] = {}
        for (z, y, x), label in zip(zyx.tolist(), labels.tolist()):
            per_slice.setdefault(int(round(z)), []).append((x, y, label))
        lo, hi, seeds, box2d = 0, shape[0] - 1, [], None
        if box is not None:
            x0, y0, z0, x1, y1, z1 = check_box3d(box, shape)
            lo, hi, box2d = z0, z1, [x0, y0, x1, y1]
            seeds.append((z0 + z1) // 2)
        seeds += [int(round(z)) for (z, _, _), label in zip(zyx.tolist(), labels.tolist()) if label == 1]
        if not seeds:
            raise InputError("give a positive click or a 3D box")
        out, visited = np.zeros(shape, dtype=bool), set()

        def run(z: int, box2d, step: int = 1) -> np.ndarray:  # an empty mask where another walk got first: stop
            if z in visited:
                return np.zeros(shape[1:], dtype=bool)
            visited.add(z)
            out[z] = self._slice(z, box2d, per_slice.get(z, []))
            return out[z]

        for seed in seeds:
            if seed not in visited and lo <= seed <= hi:
                walk_slices(run(seed, box2d), seed, lo, hi, run)
        return VolumePrediction(out, np.where(out, 1.0, -1.0).astype(np.float32))
