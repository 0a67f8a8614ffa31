"""What ``medseg serve`` holds: the open images, their label maps with undo/redo, the prompts that made
them, and a bounded LRU cache of encoder states (one per image slice).

Coordinates are the input's pixels as everywhere in medseg: boxes (x0, y0, x1, y1), points (x, y),
slices ``z`` along the array's Z axis; label maps are integer (Z, Y, X), 0 = background, k = object k.
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
from ..infer.session import brush, paint_object, segment_prompt
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
    ``(z, label slice before)``, and ``folder``: the server's private copy of the upload (removed on
    eviction). ``dicom_source``: the DICOM file or series folder a DICOM-SEG export references."""

    image_id: str
    name: str
    image: Image
    folder: Path | None = None
    dicom_source: Path | None = None
    labels: np.ndarray = field(init=False)
    objects: dict[int, str] = field(default_factory=dict)
    prompts: list[dict] = field(default_factory=list)
    undo: list[tuple[int, np.ndarray, list]] = field(default_factory=list)
    redo: list[tuple[int, np.ndarray, list]] = field(default_factory=list)
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
                "windows": ["auto", *WINDOWS] if self.image.array.shape[0] == 1 else ["auto"]}

    def check_slice(self, z: int | None) -> int:
        depth = self.shape[0]
        z = 0 if z is None else int(z)
        if not 0 <= z < depth:
            raise InputError(f"slice {z} is outside the image's {depth} slice(s): give 0..{depth - 1}")
        return z

    def display(self, z: int, window: str = "auto") -> np.ndarray:
        """Slice ``z`` as uint8 (Y, X) or (Y, X, 3) for the page: ``window`` "auto" (0.5-99.5
        percentiles of the whole image, sampled; a uint8 colour photograph as it is), or a CT preset of
        :data:`WINDOWS`."""
        arr = self.image.array[:, self.check_slice(z)].astype(np.float32)
        if window == "auto":
            lo, hi = self.auto_window
        elif window in WINDOWS and arr.shape[0] == 1:
            level, width = WINDOWS[window]
            lo, hi = level - width / 2, level + width / 2
        else:
            raise InputError(f"window {window!r}: give one of {self.info()['windows']}")
        out = (np.clip((arr - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
        return out[0] if out.shape[0] == 1 else np.moveaxis(out[:3], 0, -1)

    def _undo_step(self, z: int) -> None:
        """Remember slice ``z`` and the prompts before a change (and forget what redo held)."""
        self.undo.append((z, self.labels[z].copy(), list(self.prompts)))
        del self.undo[:-HISTORY]
        self.redo.clear()

    def paint(self, z: int, obj: int, mask: np.ndarray, prompt: dict | None) -> None:
        """Make ``mask`` (Y, X) bool object ``obj``'s pixels on slice ``z`` (its old pixels there cleared),
        with an undo step."""
        self._undo_step(z)
        paint_object(self.labels, z, obj, mask)
        if prompt is not None:
            self.prompts.append(prompt)
        self.objects.setdefault(obj, f"object {obj}")

    def brush(self, z: int, obj: int, strokes, radius: float, erase: bool) -> int:
        """A brush (or eraser) stroke on slice ``z`` with an undo step; returns the pixels it covered."""
        self._undo_step(z)
        covered = brush(self.labels, z, obj, strokes, radius, erase)
        self.prompts.append({"slice": z, "object": obj, "strokes": [list(map(float, p)) for p in strokes],
                             "radius": radius, "erase": erase})
        if not erase:
            self.objects.setdefault(obj, f"object {obj}")
        return int(covered.sum())

    def step(self, backwards: bool) -> int:
        """Undo (``backwards``) or redo one change; returns the slice it touched. Nothing to undo/redo
        is an InputError."""
        source, target = (self.undo, self.redo) if backwards else (self.redo, self.undo)
        if not source:
            raise InputError(f"nothing to {'undo' if backwards else 'redo'}")
        z, labels, prompts = source.pop()
        target.append((z, self.labels[z].copy(), list(self.prompts)))
        self.labels[z] = labels
        self.prompts = prompts
        return z

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

    def encode(self, opened: OpenImage, z: int) -> tuple:
        """The encoder state of slice ``z`` of ``opened``, from the cache (without waiting for an encoding
        in progress) or the encoder."""
        key = (opened.image_id, z)
        cached = self._cached(key)
        if cached is not None:
            return cached
        with self.encode_lock:
            cached = self._cached(key)  # encoded by another request while this one waited
            if cached is not None:
                return cached
            self.predictor.set_image(plane(opened.image, z), opened.modality)
            encoding = self.predictor.encoding
            with self.lock:
                self.encoder_runs += 1
                self.encodings[key] = encoding
                while len(self.encodings) > self.cache_size:
                    self.encodings.popitem(last=False)
            return encoding

    def segment(self, opened: OpenImage, z: int, box, points, labels) -> tuple[np.ndarray, float]:
        """One prompt set on slice ``z`` -> (mask (Y, X) bool, predicted IoU), by the rule of
        :func:`medseg.infer.session.segment_prompt` (what ``medseg predict --prompts`` replays)."""
        encoding = self.encode(opened, z)
        with self.decode_lock:
            self.decoder.set_encoding(encoding)
            return segment_prompt(self.decoder, box, points, labels)

    def close(self) -> None:
        with self.lock:
            for opened in self.images.values():
                opened.close()
            self.images.clear()
            self.encodings.clear()
