"""Predictor: encode an image once, then segment as many prompts as needed.

Coordinates are given in pixels of the input image: boxes (x0, y0, x1, y1), points (x, y).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..models import PromptableSegmenter
from ..data.preprocess import Resized, input_grid, logits_to_input_size, prepare_image


@dataclass
class Prediction:
    """masks (N, M, H, W) bool (or the ``output_hw`` asked for); scores (N, M) predicted IoU; logits (N, M, S, S) low-resolution
    logits in the model-input frame (S = model image size), usable as ``mask_input`` later."""

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """``set_image`` once per image (runs the encoder), ``predict`` many times (decoder only).

    ``engine``: "torch" (default), "onnxruntime" or "openvino", at ``precision`` "fp32" (default),
    "bf16", "fp16" (fp16 storage) or "int8" where the engine runs it (:mod:`medseg.engines.runtime`);
    the ONNX engines run on the CPU with ``threads`` (default ``torch.get_num_threads()``). ``model``
    may also be a folder written by ``medseg export`` for those engines. The API and the masks are the
    same whatever the engine."""

    def __init__(self, model: PromptableSegmenter, device: str | torch.device | None = None,
                 batch_size: int = 32, engine: str = "torch", precision: str = "fp32",
                 threads: int | None = None) -> None:
        from ..engines import check_engine, engine_model

        check_engine(engine, precision)
        if engine != "torch" and device is not None and torch.device(device).type != "cpu":
            raise InputError(f"engine {engine!r} runs on the CPU; use engine 'torch' for {device}")
        self.device = torch.device("cpu") if engine != "torch" else (
            torch.device(device) if device is not None else default_device())
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
            if self.device.type == "cpu":  # NHWC convolutions (with the inference kernels: benchmarks/torch_path.py)
                model = model.to(memory_format=torch.channels_last)
        self.model = engine_model(model, engine, precision, threads)
        self.engine, self.precision = engine, precision
        self.batch_size = batch_size
        self.embedding: torch.Tensor | None = None
        self.features: dict[str, torch.Tensor] | None = None  # stride-4/8 maps of a high-resolution mask head
        self.record: Resized | None = None
        self._prefetched: dict[tuple[str, str | None], tuple] = {}

    @torch.no_grad()
    def set_image(self, image: np.ndarray, modality: str | None = None) -> None:
        """image: (H, W) or (H, W, C) array of any dtype; ``modality`` ("CT", "MR") selects the
        intensity window of ``preprocess.MODALITY_WINDOWS``. An image given to :meth:`prefetch`
        before is not encoded again."""
        state = self._prefetched.pop((array_digest(image), modality), None) if self._prefetched else None
        if state is None:
            x, record = prepare_image(image, self.model.image_size, modality)
            state = (*self.model.encode_features(x.to(self.device)), record)
        self.embedding, self.features, self.record = state

    @torch.no_grad()
    def prefetch(self, images: list[np.ndarray], modality: str | None = None) -> None:
        """Encode several images (e.g. the next slices of a volume) in one encoder batch; a later
        ``set_image`` of one of them (same content, same modality) takes its result. Replaces what an
        earlier call prefetched."""
        prepared = [prepare_image(image, self.model.image_size, modality) for image in images]
        self._prefetched = {}
        if not prepared:
            return
        embedding, features = self.model.encode_features(torch.cat([x for x, _ in prepared]).to(self.device))
        for i, (image, (_, record)) in enumerate(zip(images, prepared)):
            maps = None if features is None else {k: v[i:i + 1] for k, v in features.items()}
            self._prefetched[(array_digest(image), modality)] = (embedding[i:i + 1], maps, record)

    @property
    def encoding(self) -> tuple:
        """The current image's encoder state ``(embedding, features, resize record)``; hand it back to
        :meth:`set_encoding` to switch images without running the encoder again (a server's cache)."""
        if self.record is None:
            raise RuntimeError("call set_image(image) before reading the encoding")
        return self.embedding, self.features, self.record

    def set_encoding(self, encoding: tuple) -> None:
        """Make ``encoding`` (from :attr:`encoding`, with this predictor's model) the current image."""
        self.embedding, self.features, self.record = encoding

    def set_embedding(self, embedding: torch.Tensor, original_hw: tuple[int, int]) -> None:
        """Reuse a cached embedding (1, 256, E, E) of an image of size (H, W)."""
        from ..data.preprocess import longest_side_shape

        if self.model.uses_features:
            raise InputError("this model's mask head needs the encoder's feature maps, which a cached embedding "
                             "lacks: use set_image")
        size = self.model.image_size
        self.embedding, self.features = embedding.to(self.device), None
        self.record = Resized(tuple(original_hw), longest_side_shape(tuple(original_hw), size), size)

    @property
    def image_hw(self) -> tuple[int, int]:
        if self.record is None:
            raise RuntimeError("call set_image(image) before predict()")
        return self.record.original_hw

    @torch.no_grad()
    def predict(self, box: np.ndarray | None = None, points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, mask_input: np.ndarray | None = None,
                multimask: bool = False, output_hw: tuple[int, int] | None = None) -> Prediction:
        """Segment N objects, one prompt set each.

        box: (4,) or (N, 4); points: (K, 2) or (N, K, 2); point_labels: (K,) or (N, K), 1 positive,
        0 negative (default all positive); mask_input: (N, 1, S, S) or (1, S, S) logits from an earlier
        ``Prediction.logits``. Boxes reaching past the image are clipped to it; a box wholly outside,
        an inverted box or a point outside the image is an ``InputError``.

        The masks are (N, M, H, W) at the image's own resolution, or on an ``output_hw`` (H', W') grid over
        it. A model with an implicit decoder decodes them at those pixels' centres; others upsample
        the S x S logits bilinearly.
        """
        h, w = self.image_hw
        if output_hw is not None and (len(output_hw) != 2 or min(output_hw) < 1):
            raise InputError(f"output_hw must be (height, width) >= 1, got {output_hw}")
        implicit = getattr(self.model, "has_implicit_decoder", False)
        grid = input_grid(self.record, output_hw).to(self.device) if implicit else None
        boxes = None if box is None else self._check_boxes(np.asarray(box, dtype=np.float64), h, w)
        pts, labels = (None, None) if points is None else self._check_points(points, point_labels, h, w)
        mask_input = None if mask_input is None else self._check_mask_input(mask_input)
        n = _common_count(boxes, pts, mask_input)
        if n == 0:
            raise InputError("no objects to segment: the prompts hold zero boxes/points.")
        scale = self.record.scale
        masks, scores, logits = [], [], []
        for start in range(0, n, self.batch_size):
            sl = slice(start, min(n, start + self.batch_size))
            tb = None if boxes is None else torch.as_tensor(boxes[sl] * scale, dtype=torch.float32, device=self.device)
            tp = None if pts is None else (torch.as_tensor(pts[sl] * scale, dtype=torch.float32, device=self.device),
                                           torch.as_tensor(labels[sl], dtype=torch.int64, device=self.device))
            tm = None
            if mask_input is not None:
                m = mask_input[sl] if mask_input.shape[0] > 1 else np.repeat(mask_input, sl.stop - sl.start, 0)
                tm = torch.as_tensor(m, device=self.device)
            if implicit:  # one pass: the masks at the output pixels, and the S x S logits of the decoder
                # under the implicit one (the next round's mask prompt, as training feeds it)
                at, iou, low = self.model.decode(self.embedding, tb, tp, tm, multimask, self.features, at=grid,
                                                 with_coarse=True)
                full = at.unflatten(-1, output_hw or (h, w))
            else:
                low, iou = self.model.decode(self.embedding, tb, tp, tm, multimask, self.features)
                full = logits_to_input_size(low, self.record, output_hw)
            masks.append((full > 0).cpu().numpy())
            scores.append(iou.float().cpu().numpy())
            logits.append(low.float().cpu().numpy())
        return Prediction(np.concatenate(masks), np.concatenate(scores), np.concatenate(logits))

    def _check_mask_input(self, mask_input) -> np.ndarray:
        size = self.model.image_size
        m = np.asarray(mask_input, dtype=np.float32)
        m = m[None] if m.ndim == 3 else m
        if m.ndim != 4 or m.shape[1:] != (1, size, size):
            raise InputError(f"mask_input must be (N, 1, {size}, {size}) or (1, {size}, {size}) low-resolution logits, "
                             f"got {np.shape(mask_input)}; from a multimask Prediction pass logits[:, i:i+1].")
        return m

    @staticmethod
    def _check_boxes(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
        boxes = boxes.reshape(1, 4) if boxes.shape == (4,) else boxes
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            raise InputError(f"box must be (4,) or (N, 4) finite x0, y0, x1, y1; got shape {boxes.shape}")
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bad.any():
            raise InputError(f"box {boxes[bad][0].tolist()} is inverted: give x0 <= x1 and y0 <= y1 (x0, y0, x1, y1).")
        outside = (boxes[:, 2] < 0) | (boxes[:, 3] < 0) | (boxes[:, 0] > w - 1) | (boxes[:, 1] > h - 1)
        if outside.any():
            raise InputError(f"box {boxes[outside][0].tolist()} lies outside the image of {w}x{h} (width x height) "
                             f"pixels; coordinates are x0, y0, x1, y1 in the input's pixels.")
        return np.clip(boxes, 0, [w - 1, h - 1, w - 1, h - 1])

    @staticmethod
    def _check_points(points, labels, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        pts = np.asarray(points, dtype=np.float64)
        pts = pts[None] if pts.ndim == 2 else pts
        if pts.ndim != 3 or pts.shape[-1] != 2 or not np.isfinite(pts).all():
            raise InputError(f"points must be (K, 2) or (N, K, 2) finite (x, y); got shape {np.shape(points)}")
        labels = np.ones(pts.shape[:2], dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        if labels.shape == pts.shape[1:2]:  # (K,) labels shared by the N objects
            labels = np.broadcast_to(labels, pts.shape[:2]).copy()
        if labels.shape != pts.shape[:2]:
            raise InputError(f"point_labels of shape {labels.shape} do not match points of shape {pts.shape}: "
                             f"give one label (1 positive, 0 negative) per point.")
        if not np.isin(labels, (0, 1)).all():
            raise InputError("point_labels must be 1 (positive) or 0 (negative).")
        out = (pts[..., 0] < 0) | (pts[..., 0] > w - 1) | (pts[..., 1] < 0) | (pts[..., 1] > h - 1)
        if out.any():
            raise InputError(f"point {pts[out][0].tolist()} lies outside the image of {w}x{h} (width x height) pixels.")
        return pts, labels


def array_digest(image: np.ndarray) -> str:
    """Key of an image array as handed to ``Predictor.set_image`` (bytes, shape and dtype)."""
    image = np.ascontiguousarray(image)
    return hashlib.sha1(image.tobytes() + f"{image.shape}{image.dtype}".encode()).hexdigest()


def _common_count(boxes, pts, mask_input) -> int:
    counts = {len(a) for a in (boxes, pts) if a is not None}
    if mask_input is not None and np.ndim(mask_input) == 4 and np.shape(mask_input)[0] > 1:
        counts.add(np.shape(mask_input)[0])
    if len(counts) > 1:
        raise InputError(f"prompts disagree on the number of objects: {sorted(counts)}; give one prompt set per object.")
    if not counts:
        if mask_input is None:
            raise InputError("give at least one prompt: box, points or mask_input.")
        return 1
    return counts.pop()
