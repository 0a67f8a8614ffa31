"""Prompt sessions: one prompt set on one slice -> one object's mask, and the replay of a session's prompts.

A session is what ``medseg serve`` records (``GET /api/images/{id}/session``) and ``medseg predict
--prompts session.json`` replays: ``{"shape": [Z, Y, X], "prompts": [{"slice": z, "object": k,
"box": [x0, y0, x1, y1] | null, "points": [[x, y], ...], "labels": [1, 0, ...] | null}`` or brush strokes
``{"slice", "object", "strokes": [[x, y], ...], "radius": r, "erase": bool}``, ...]}`` in the order they
were given, coordinates in the input's pixels. Each prompt replaces object k's pixels on
slice z, so replaying them in order gives the label map the page showed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.cases import plane
from ..errors import InputError
from ..io import Image
from .predictor import Predictor


def segment_prompt(predictor: Predictor, box=None, points=None, labels=None) -> tuple[np.ndarray, float]:
    """One prompt set on the predictor's current image -> (mask (H, W) bool, predicted IoU). A lone click
    (one point, no box) asks for three candidates and keeps the one with the best predicted IoU."""
    multimask = box is None and points is not None and len(points) == 1
    result = predictor.predict(box=box, points=points, point_labels=labels, multimask=multimask)
    best = int(np.argmax(result.scores[0]))
    return result.masks[0, best], float(result.scores[0, best])


def paint_object(labels: np.ndarray, z: int, obj: int, mask: np.ndarray) -> None:
    """labels (Z, Y, X): object ``obj``'s pixels on slice ``z`` become ``mask`` (Y, X) bool, in place."""
    current = labels[z]
    current[current == obj] = 0
    current[mask] = obj


def stroke_mask(shape_yx: tuple[int, int], strokes, radius: float) -> np.ndarray:
    """The pixels (Y, X) bool within ``radius`` of a brush stroke: ``strokes`` (K, 2) points (x, y), each
    joined to the next by a line."""
    pts = np.asarray(strokes, dtype=np.float64).reshape(-1, 2)
    if len(pts) > 1:  # points every half pixel along each segment
        steps = [np.linspace(a, b, max(2, int(np.ceil(2 * np.hypot(*(b - a)))) + 1)) for a, b in zip(pts[:-1], pts[1:])]
        pts = np.concatenate(steps)
    h, w = shape_yx
    mask = np.zeros((h, w), dtype=bool)
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = dy ** 2 + dx ** 2 <= radius ** 2
    for x, y in np.unique(np.round(pts).astype(int), axis=0):
        y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
        if y0 < y1 and x0 < x1:
            mask[y0:y1, x0:x1] |= disc[y0 - y + r:y1 - y + r, x0 - x + r:x1 - x + r]
    return mask


def brush(labels: np.ndarray, z: int, obj: int, strokes, radius: float, erase: bool) -> np.ndarray:
    """Paint object ``obj`` along ``strokes`` on slice ``z`` of labels (Z, Y, X), in place, or with
    ``erase`` clear ``obj``'s pixels there; returns the stroke's pixels (Y, X) bool."""
    mask = stroke_mask(labels.shape[1:], strokes, radius)
    current = labels[z]
    if erase:
        current[mask & (current == obj)] = 0
    else:
        current[mask] = obj
    return mask


def prompt_arrays(prompt: dict) -> tuple:
    """A session prompt -> (box (4,) | None, points (K, 2) | None, labels (K,) | None) arrays."""
    box = None if prompt.get("box") is None else np.asarray(prompt["box"], dtype=np.float64)
    points = np.asarray(prompt["points"], dtype=np.float64).reshape(-1, 2) if prompt.get("points") else None
    labels = np.asarray(prompt["labels"], dtype=np.int64) if points is not None and prompt.get("labels") else None
    return box, points, labels


def read_session(path: Path) -> dict:
    """The session JSON at ``path``, checked; InputError naming the file and the bad entry."""
    try:
        session = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such prompts file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a prompts JSON ({error}); save one from medseg serve's 'Prompts JSON'") from None
    prompts = session.get("prompts") if isinstance(session, dict) else None
    if not isinstance(prompts, list) or not prompts:
        raise InputError(f"{path}: no 'prompts' list; save one from medseg serve's 'Prompts JSON'")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, dict) or not isinstance(prompt.get("object", 1), int) or \
                (prompt.get("box") is None and not prompt.get("points") and not prompt.get("strokes")):
            raise InputError(f"{path}: prompt {i} needs an integer 'object' and a 'box', 'points' or brush 'strokes'")
    return session


def replay(predictor: Predictor, image: Image, session: dict, source: Path | str = "the prompts") -> np.ndarray:
    """The label map (Z, Y, X) uint16 that ``session``'s prompts give on ``image``, in order."""
    shape = image.spatial_shape
    if session.get("shape") is not None and tuple(session["shape"]) != tuple(shape):
        raise InputError(f"{source}: the prompts were made on an image of shape {session['shape']} (Z, Y, X); "
                         f"{image.meta.source} has {list(shape)}: replay them on the image they were made on")
    labels = np.zeros(shape, dtype=np.uint16)
    current = None
    for i, prompt in enumerate(session["prompts"]):
        z = int(prompt.get("slice") or 0)
        if not 0 <= z < shape[0]:
            raise InputError(f"{source}: prompt {i} is on slice {z}, outside the image's {shape[0]} slice(s)")
        if prompt.get("strokes"):
            brush(labels, z, int(prompt.get("object", 1)), prompt["strokes"], float(prompt.get("radius", 3)),
                  bool(prompt.get("erase")))
            continue
        if z != current:
            predictor.set_image(plane(image, z), image.meta.modality)
            current = z
        box, points, point_labels = prompt_arrays(prompt)
        mask, _ = segment_prompt(predictor, box, points, point_labels)
        paint_object(labels, z, int(prompt.get("object", 1)), mask)
    return labels
