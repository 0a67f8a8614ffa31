"""What ``medseg serve`` holds: the open images, their label maps with undo/redo, the prompts that made
them, and a bounded LRU cache of encoder states (one per image slice).

Coordinates are the input's pixels as everywhere in medseg: boxes (x0, y0, x1, y1), points (x, y) in
the cut's (columns, rows); a cut is slice ``z`` along an ``axis`` of (Z, Y, X) (0 axial (Y, X), 1
coronal (Z, X), 2 sagittal (Z, Y): :data:`medseg.infer.session.PLANES`); label maps are integer
(Z, Y, X), 0 = background, k = object k.
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
from ..infer.session import PLANES, brush, cuts, paint_automatic, paint_object, propagate, segment_prompt
from ..io import Image

WINDOWS: dict[str, tuple[float, float]] = {  # CT presets: (level, width) in HU
    "soft": (40.0, 400.0), "lung": (-600.0, 1500.0), "bone": (400.0, 1800.0)}
HISTORY = 100  # undo steps kept per image


class UnknownImage(KeyError):
    """No open image has this id (expired from the store or never opened)."""


@dataclass
class OpenImage:
    """One opened image: ``image`` (C, Z, Y, X), its label map (Z, Y, X) uint16, object names, the prompts
    of every segment call (replayable by ``medseg predict --prompts``), undo/redo stacks of
    ``(axis, first cut, the cuts' labels before, prompts before)``, and ``folder``: the server's private copy of the upload (removed on
    eviction). ``dicom_source``: the DICOM file or series folder a DICOM-SEG export references."""

    image_id: str
    name: str
    image: Image
    folder: Path | None = None
    dicom_source: Path | None = None
    labels: np.ndarray = field(init=False)
    objects: dict[int, str] = field(default_factory=dict)
    prompts: list[dict] = field(default_factory=list)
    undo: list[tuple[int, int, np.ndarray, list]] = field(default_factory=list)
    redo: list[tuple[int, int, np.ndarray, list]] = field(default_factory=list)
    auto_window: tuple[float, float] = (0.0, 1.0)

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
        self.undo.append((axis, lo, cuts(self.labels, axis)[lo:hi + 1].copy(), list(self.prompts)))
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
        axis, lo, block, prompts = source.pop()
        view = cuts(self.labels, axis)
        target.append((axis, lo, view[lo:lo + len(block)].copy(), list(self.prompts)))
        view[lo:lo + len(block)] = block
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

    def __init__(self, predictor: Predictor, cache_size: int = 16, max_images: int = 32) -> None:
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
        opened.undo.append((axis, lo, *before))
        del opened.undo[:-HISTORY]
        opened.redo.clear()
        opened.prompts.append(with_plane({"slice": z, "object": obj, "propagate": [lo, hi]}, axis))
        return done

    def close(self) -> None:
        with self.lock:
            for opened in self.images.values():
                opened.close()
            self.images.clear()
            self.encodings.clear()


def with_plane(prompt: dict, axis: int) -> dict:
    """A session prompt with its plane named when it is not axial (axial prompts stay as they were)."""
    return prompt if axis == 0 else {**prompt, "plane": list(PLANES)[axis]}
