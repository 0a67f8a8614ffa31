"""What ``medseg serve`` holds: the open images, their label maps with undo/redo, the prompts that made
them, a bounded LRU cache of encoder states (one per image slice), and for 3D clicks an optional
promptable 3D model (:class:`VolumeModel`) with the encoding of the volume it was last prompted on.

Coordinates are the input's pixels as everywhere in medseg: boxes (x0, y0, x1, y1), points (x, y) in
the cut's (columns, rows); a cut is slice ``z`` along an ``axis`` of (Z, Y, X) (0 axial (Y, X), 1
coronal (Z, X), 2 sagittal (Z, Y): :data:`medseg.infer.session.PLANES`); label maps are integer
(Z, Y, X), 0 = background, k = object k. 3D clicks are voxel indices (x, y, z), 3D boxes
(x0, y0, z0, x1, y1, z1) inclusive.
"""

from __future__ import annotations

import copy
import secrets
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.cases import plane
from ..errors import InputError
from ..infer import Predictor
from ..infer.session import (PLANES, brush, cuts, is_volume_prompt, paint_automatic, paint_object, paint_volume,
                             propagate, segment_prompt, segment_volume_prompt)
from ..infer.volume import check_box3d
from ..io import Image

WINDOWS: dict[str, tuple[float, float]] = {  # CT presets: (level, width) in HU
    "soft": (40.0, 400.0), "lung": (-600.0, 1500.0), "bone": (400.0, 1800.0)}
HISTORY = 100  # undo steps kept per image
LOGITS_KEPT = 4  # per image: the 3D logits of the last few 3D prompts, for refining clicks (after an undo too)
NO_VOLUME_MODEL = ("this server has no promptable 3D model: start medseg serve with --volume-model litemedsam-3d "
                   "(`medseg models` lists the promptable-3d ones), and --volume-checkpoint W for trained weights")


class UnknownImage(KeyError):
    """No open image has this id (expired from the store or never opened)."""


class VolumeClicksOff(InputError):
    """3D clicks asked of a server without a promptable 3D model (the API answers 409)."""


@dataclass
class VolumeModel:
    """What answers 3D clicks: ``predictor``, a :class:`~medseg.infer.volume_prompts.VolumePredictor`, with its
    model's ``name`` and ``weights`` ("shipped", "checkpoint" or "random", for the session's replay); or no
    predictor and ``note``, why 3D clicks are off and how to turn them on."""

    predictor: object | None = None
    name: str | None = None
    weights: str = "shipped"
    note: str = NO_VOLUME_MODEL


@dataclass
class OpenImage:
    """One opened image: ``image`` (C, Z, Y, X), its label map (Z, Y, X) uint16, object names, the prompts
    of every segment call (replayable by ``medseg predict --prompts``), undo/redo stacks of
    ``(axis, first cut, the labels before, prompts before, (row, column))``: the labels of cuts from the
    first on, their rows and columns from (row, column) on (a 3D click keeps only the box it changed), and
    ``folder``: the server's private copy of the upload (removed on eviction). ``dicom_source``: the DICOM
    file or series folder a DICOM-SEG export references. ``logits3d``: ``{id(prompt): (prompt, logits)}`` of
    the last few 3D prompts, for a refining click."""

    image_id: str
    name: str
    image: Image
    folder: Path | None = None
    dicom_source: Path | None = None
    labels: np.ndarray = field(init=False)
    objects: dict[int, str] = field(default_factory=dict)
    prompts: list[dict] = field(default_factory=list)
    undo: list[tuple[int, int, np.ndarray, list, tuple[int, int]]] = field(default_factory=list)
    redo: list[tuple[int, int, np.ndarray, list, tuple[int, int]]] = field(default_factory=list)
    auto_window: tuple[float, float] = (0.0, 1.0)
    logits3d: OrderedDict[int, tuple[dict, np.ndarray]] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.labels = np.zeros(self.image.spatial_shape, dtype=np.uint16)
        arr = self.image.array
        if arr.dtype == np.uint8 and arr.shape[0] >= 3:  # a colour photograph: shown as it is
            self.auto_window = (0.0, 255.0)
            return
        step = max(1, int(np.ceil((arr.size / 4e6) ** 0.5)))  # percentiles of at most ~4M voxels
        sample = arr[..., ::step, ::step].astype(np.float32)
        lo, hi = np.percentile(sample, (0.5, 99.5)) if sample.size else (0.0, 1.0)
        self.auto_window = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.image.spatial_shape

    @property
    def modality(self) -> str | None:
        return self.image.meta.modality

    def info(self) -> dict:
        z, y, x = self.shape
        return {"image_id": self.image_id, "name": self.name, "shape": [z, y, x],
                "channels": int(self.image.array.shape[0]), "modality": self.modality,
                "format": self.image.meta.format, "dicom": self.dicom_source is not None,
                "spacing": [float(s) for s in self.image.meta.spacing], "objects": self.objects,
                "windows": ["auto", *WINDOWS] if self.image.array.shape[0] == 1 else ["auto"],
                "planes": list(PLANES) if z > 1 else ["axial"]}

    def check_slice(self, z: int | None, axis: int = 0) -> int:
        """``z`` (None: 0) checked against the cuts of ``axis``; InputError outside them."""
        depth, name = self.shape[axis], list(PLANES)[axis]
        z = 0 if z is None else int(z)
        if not 0 <= z < depth:
            raise InputError(f"slice {z} is outside the image's {depth} {name} slice(s): give 0..{depth - 1}")
        return z

    def cut_shape(self, axis: int = 0) -> tuple[int, int]:
        """(H, W) of the cuts of ``axis``."""
        return tuple(n for i, n in enumerate(self.shape) if i != axis)

    def cut(self, z: int, axis: int = 0) -> np.ndarray:
        """Cut ``z`` of ``axis`` of the image as the encoder takes it: (H, W) or (H, W, C)."""
        return plane(self.image, self.check_slice(z, axis), axis)

    def display(self, z: int, window: str = "auto", axis: int = 0) -> np.ndarray:
        """Cut ``z`` of ``axis`` as uint8 (H, W) or (H, W, 3) for the page: ``window`` "auto" (0.5-99.5
        percentiles of the whole image, sampled; a uint8 colour photograph as it is), or a CT preset of
        :data:`WINDOWS`."""
        arr = np.take(self.image.array, self.check_slice(z, axis), axis=1 + axis).astype(np.float32)
        if window == "auto":
            lo, hi = self.auto_window
        elif window in WINDOWS and arr.shape[0] == 1:
            level, width = WINDOWS[window]
            lo, hi = level - width / 2, level + width / 2
        else:
            raise InputError(f"window {window!r}: give one of {self.info()['windows']}")
        out = (np.clip((arr - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
        return out[0] if out.shape[0] == 1 else np.moveaxis(out[:3], 0, -1)

    def _undo_step(self, axis: int, lo: int, hi: int | None = None) -> None:
        """Remember cuts ``lo..hi`` (one cut without ``hi``) of ``axis`` and the prompts before a change
        (and forget what redo held)."""
        hi = lo if hi is None else hi
        self.remember((axis, lo, cuts(self.labels, axis)[lo:hi + 1].copy(), list(self.prompts), (0, 0)))

    def remember(self, step: tuple) -> None:
        """Push an undo step (see the class) and forget what redo held."""
        self.undo.append(step)
        del self.undo[:-HISTORY]
        self.redo.clear()

    def paint(self, axis: int, z: int, obj: int, mask: np.ndarray, prompt: dict | None) -> None:
        """Make ``mask`` (H, W) bool object ``obj``'s pixels on cut ``z`` of ``axis`` (its old pixels there
        cleared), with an undo step."""
        self._undo_step(axis, z)
        paint_object(cuts(self.labels, axis), z, obj, mask)
        if prompt is not None:
            self.prompts.append(prompt)
        self.objects.setdefault(obj, f"object {obj}")

    def paint_volume(self, obj: int, mask: np.ndarray, prompt: dict, logits: np.ndarray) -> tuple[int, int] | None:
        """Make ``mask`` (Z, Y, X) bool object ``obj``'s voxels in the whole volume (its old voxels cleared) as
        one undo step, which keeps the labels of the box around the old and new voxels; records ``prompt``
        and keeps ``logits`` for a refining click. Returns the first and last slice it changed (None: none)."""
        box = _extent(mask | (self.labels == obj))
        zs, ys, xs = box or (slice(0, 1),) * 3
        self.remember((0, zs.start, self.labels[zs, ys, xs].copy(), list(self.prompts), (ys.start, xs.start)))
        paint_volume(self.labels, obj, mask)
        self.prompts.append(prompt)
        self.objects.setdefault(obj, f"object {obj}")
        self.logits3d[id(prompt)] = (prompt, logits)
        while len(self.logits3d) > LOGITS_KEPT:
            self.logits3d.popitem(last=False)
        return None if box is None else (zs.start, zs.stop - 1)

    def previous_logits(self, prompt: dict) -> np.ndarray | None:
        """The logits of the object's last 3D prompt (in the prompts as they stand, after any undo) when the
        3D ``prompt`` goes on from it (the same box, its clicks first) and they are still kept: the mask
        input of a refining click; else None (a fresh 3D segmentation)."""
        obj = prompt["object"]
        last = next((p for p in reversed(self.prompts) if is_volume_prompt(p) and p["object"] == obj), None)
        kept = None if last is None else self.logits3d.get(id(last))
        if kept is None or kept[0] is not last or last["box3d"] != prompt["box3d"]:
            return None
        n = len(last["points3d"])
        clicks = list(zip(prompt["points3d"], prompt["labels"] or []))[:n]
        return kept[1] if clicks == list(zip(last["points3d"], last["labels"] or [])) else None

    def paint_classes(self, axis: int, z: int, automatic: np.ndarray, classes: dict[int, str], prompt: dict) -> None:
        """An automatic label map (H, W) on cut ``z``: class c becomes object c, named after the class
        (one undo step)."""
        self._undo_step(axis, z)
        paint_automatic(cuts(self.labels, axis), z, automatic, classes)
        self.prompts.append(prompt)
        self.objects.update({int(c): name for c, name in classes.items()})

    def brush(self, axis: int, z: int, obj: int, strokes, radius: float, erase: bool) -> int:
        """A brush (or eraser) stroke on cut ``z`` of ``axis`` with an undo step; returns the pixels it covered."""
        self._undo_step(axis, z)
        covered = brush(cuts(self.labels, axis), z, obj, strokes, radius, erase)
        prompt = {"slice": z, "object": obj, "strokes": [list(map(float, p)) for p in strokes],
                  "radius": radius, "erase": erase}
        self.prompts.append(with_plane(prompt, axis))
        if not erase:
            self.objects.setdefault(obj, f"object {obj}")
        return int(covered.sum())

    def step(self, backwards: bool) -> tuple[int, int]:
        """Undo (``backwards``) or redo one change; returns (axis, first cut) it touched. Nothing to
        undo/redo is an InputError."""
        source, target = (self.undo, self.redo) if backwards else (self.redo, self.undo)
        if not source:
            raise InputError(f"nothing to {'undo' if backwards else 'redo'}")
        axis, lo, block, prompts, (row, col) = source.pop()
        view = cuts(self.labels, axis)[lo:lo + len(block), row:row + block.shape[1], col:col + block.shape[2]]
        target.append((axis, lo, view.copy(), list(self.prompts), (row, col)))
        view[...] = block
        self.prompts = prompts
        return axis, lo

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class Store:
    """The open images (at most ``max_images``; the least recently used is closed first) and the LRU
    cache of encoder states, at most ``cache_size`` slices. Two predictors share the one model: the
    encoder's (``predictor``, under ``encode_lock``) and the decoder's (a copy with its own current
    image, under ``decode_lock``), so a click on a cached slice does not wait for another client's
    encoding."""

    def __init__(self, predictor: Predictor, cache_size: int = 16, max_images: int = 32,
                 volume: VolumeModel | None = None) -> None:
        if cache_size < 1 or max_images < 1:
            raise InputError("--cache-size and the image limit must be 1 or more")
        self.predictor = predictor
        self.cache_size, self.max_images = cache_size, max_images
        self.images: OrderedDict[str, OpenImage] = OrderedDict()
        self.encodings: OrderedDict[tuple[str, int], tuple] = OrderedDict()
        self.decoder = copy.copy(predictor)  # same model and engine sessions, its own current image
        self.lock = threading.RLock()  # the images and the cache
        self.encode_lock, self.decode_lock = threading.Lock(), threading.Lock()
        self.encoder_runs = 0
        self.volume = volume or VolumeModel()
        self.volume_lock = threading.Lock()  # the 3D predictor: its one encoded volume, and each 3D click
        self.volume_image: str | None = None  # the image whose volume it holds encoded
        self.volume_runs = 0

    def add(self, name: str, image: Image, folder: Path | None = None, dicom_source: Path | None = None) -> OpenImage:
        opened = OpenImage(secrets.token_hex(8), name, image, folder, dicom_source)
        with self.lock:
            self.images[opened.image_id] = opened
            while len(self.images) > self.max_images:
                _, old = self.images.popitem(last=False)
                self._forget(old)
        return opened

    def get(self, image_id: str) -> OpenImage:
        with self.lock:
            if image_id not in self.images:
                raise UnknownImage(image_id)
            self.images.move_to_end(image_id)
            return self.images[image_id]

    def remove(self, image_id: str) -> None:
        with self.lock:
            if image_id not in self.images:
                raise UnknownImage(image_id)
            self._forget(self.images.pop(image_id))

    def _forget(self, opened: OpenImage) -> None:
        for key in [k for k in self.encodings if k[0] == opened.image_id]:
            del self.encodings[key]
        if self.volume_image == opened.image_id:
            self.volume_image = None
        opened.close()

    def _cached(self, key: tuple[str, int]) -> tuple | None:
        with self.lock:
            if key not in self.encodings:
                return None
            self.encodings.move_to_end(key)
            return self.encodings[key]

    @property
    def tasks(self) -> dict:
        """The universal model's tasks ({name: TaskInfo}); empty when the served model has no automatic mode."""
        return dict(self.predictor.tasks) if hasattr(self.predictor, "segment_embedding") else {}

    def encode(self, opened: OpenImage, axis: int, z: int, modality: str | None = None) -> tuple:
        """The encoder state of cut ``z`` of ``axis`` of ``opened`` under intensity window ``modality``
        (None: the image's own), from the cache (without waiting for an encoding in progress) or the encoder."""
        modality = opened.modality if modality is None else modality
        key = (opened.image_id, axis, z, modality)
        cached = self._cached(key)
        if cached is not None:
            return cached
        with self.encode_lock:
            cached = self._cached(key)  # encoded by another request while this one waited
            if cached is not None:
                return cached
            self.predictor.set_image(opened.cut(z, axis), modality)
            encoding = self.predictor.encoding
            with self.lock:
                self.encoder_runs += 1
                self.encodings[key] = encoding
                while len(self.encodings) > self.cache_size:
                    self.encodings.popitem(last=False)
            return encoding

    def segment(self, opened: OpenImage, axis: int, z: int, box, points, labels) -> tuple[np.ndarray, float]:
        """One prompt set on cut ``z`` of ``axis`` -> (mask (H, W) bool, predicted IoU), by the rule of
        :func:`medseg.infer.session.segment_prompt` (what ``medseg predict --prompts`` replays)."""
        encoding = self.encode(opened, axis, z)
        with self.decode_lock:
            self.decoder.set_encoding(encoding)
            return segment_prompt(self.decoder, box, points, labels)

    def automatic(self, opened: OpenImage, axis: int, z: int, task: str):
        """Every class of ``task`` on cut ``z`` with no prompt -> :class:`~medseg.infer.automatic.AutoResult`
        (InputError when the served model has no automatic mode or does not know ``task``)."""
        if not self.tasks:
            raise InputError("the served model has no automatic mode: serve a universal model "
                             "(the default shipped litemedsam, or --model universal)")
        if task not in self.tasks:
            raise InputError(f"task {task!r}: the served model knows {', '.join(self.tasks)}")
        encoding = self.encode(opened, axis, z, self.decoder.modality_for(task))
        with self.decode_lock:
            self.decoder.set_encoding(encoding)
            return self.decoder.segment_embedding(task)

    def propagate(self, opened: OpenImage, axis: int, z: int, obj: int, lo: int, hi: int) -> list[int]:
        """Walk object ``obj``'s mask on cut ``z`` over the cuts ``lo..hi`` of ``axis`` (each prompted with
        the box of the previous cut's mask), as one undo step; returns the cuts it painted."""
        opened.check_slice(lo, axis), opened.check_slice(hi, axis)
        view = cuts(opened.labels, axis)
        before = (view[lo:hi + 1].copy(), list(opened.prompts))
        try:
            done = propagate(view, z, obj, lo, hi, lambda i, box: self.segment(opened, axis, i, box, None, None)[0])
        except BaseException:
            view[lo:hi + 1] = before[0]  # nothing half-done
            raise
        opened.remember((axis, lo, *before, (0, 0)))
        opened.prompts.append(with_plane({"slice": z, "object": obj, "propagate": [lo, hi]}, axis))
        return done

    def check_volume(self, opened: OpenImage) -> None:
        """VolumeClicksOff without a 3D model; InputError unless ``opened`` is a one-channel volume."""
        if self.volume.predictor is None:
            raise VolumeClicksOff(f"3D clicks are off on this server: {self.volume.note}")
        if opened.shape[0] < 2:
            raise InputError(f"{opened.name} is a 2D picture: 3D clicks need a volume; click without the 3D mode")
        if opened.image.array.shape[0] != 1:
            raise InputError(f"{opened.name} has {opened.image.array.shape[0]} channels: 3D clicks need a "
                             f"one-channel volume")

    def encode_volume(self, opened: OpenImage) -> bool:
        """Encode ``opened`` for 3D clicks unless it is the volume encoded last (seconds to tens of seconds
        on a CPU); True when it encoded now."""
        self.check_volume(opened)
        with self.volume_lock:
            return self._set_volume(opened)

    def _set_volume(self, opened: OpenImage) -> bool:
        if self.volume_image == opened.image_id:
            return False
        self.volume_image = None  # until it is done: a failed encoding leaves nothing half-set
        self.volume.predictor.set_volume(opened.image.array[0], opened.image.meta.spacing, opened.modality)
        self.volume_image = opened.image_id
        self.volume_runs += 1
        return True

    def segment_volume(self, opened: OpenImage, obj: int, points: list, labels: list | None, box: list | None) -> dict:
        """3D clicks (K, 3) x, y, z with labels (1 object, 0 background; None: all 1) and/or a 3D box ->
        object ``obj``'s voxels in the whole volume, one undo step, the prompt recorded as
        :func:`medseg.infer.session.segment_volume_prompt` replays it (refining the object's previous 3D
        prompt when its clicks go on from it). Returns ``{"voxels", "changed": [first, last] slice | None,
        "refined", "encoded"}``; prompts are checked before the volume is encoded."""
        self.check_volume(opened)
        check_prompt3d(opened.shape, points, labels, box)
        prompt = {"object": obj, "points3d": [[float(v) for v in p] for p in points],
                  "labels": ([int(v) for v in labels] if labels else [1] * len(points)) if points else None,
                  "box3d": None if box is None else [float(v) for v in box], "refine": False}
        with self.volume_lock:
            encoded = self._set_volume(opened)
            previous = opened.previous_logits(prompt)
            prompt["refine"] = previous is not None
            out = segment_volume_prompt(self.volume.predictor, prompt, previous)
            changed = opened.paint_volume(obj, out.mask, prompt, out.logits)
        return {"voxels": int(out.mask.sum()), "changed": None if changed is None else list(changed),
                "refined": prompt["refine"], "encoded": encoded}

    def close(self) -> None:
        with self.lock:
            for opened in self.images.values():
                opened.close()
            self.images.clear()
            self.encodings.clear()


def with_plane(prompt: dict, axis: int) -> dict:
    """A session prompt with its plane named when it is not axial (axial prompts stay as they were)."""
    return prompt if axis == 0 else {**prompt, "plane": list(PLANES)[axis]}


def check_prompt3d(shape_zyx: tuple[int, int, int], points: list, labels: list | None, box: list | None) -> None:
    """InputError unless the 3D clicks (x, y, z) lie in a (Z, Y, X) volume, each with a label 1 or 0 (or
    no labels: all 1), and the 3D box (x0, y0, z0, x1, y1, z1) is one in it; at least one of them."""
    z, y, x = shape_zyx
    if box is None and not points:
        raise InputError("give at least one 3D click [x, y, z] or a 3D box [x0, y0, z0, x1, y1, z1]")
    if any(len(p) != 3 for p in points):
        raise InputError("points: give each 3D click as [x, y, z] voxel indices")
    outside = [list(p) for p in points if not (np.isfinite(p).all() and 0 <= p[0] < x and 0 <= p[1] < y and 0 <= p[2] < z)]
    if outside:
        raise InputError(f"points {outside} lie outside the volume of {x}x{y}x{z} (X x Y x Z) voxels; give (x, y, z) "
                         f"voxel indices 0..{x - 1}, 0..{y - 1}, 0..{z - 1}")
    if labels and (len(labels) != len(points) or any(v not in (0, 1) for v in labels)):
        raise InputError(f"labels: give one label per click ({len(points)}), 1 object, 0 background")
    if box is not None:
        if not np.isfinite(box).all():
            raise InputError(f"3D box {list(box)}: give finite voxel indices")
        check_box3d(box, shape_zyx)


def _extent(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The (z, y, x) slices of the box around a (Z, Y, X) mask's voxels; None when it has none."""
    if not mask.any():
        return None
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)
