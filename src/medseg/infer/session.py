"""Prompt sessions: one prompt set on one slice -> one object's mask, and the replay of a session's prompts.

A session is what ``medseg serve`` records (``GET /api/images/{id}/session``) and ``medseg predict
--prompts session.json`` replays: ``{"shape": [Z, Y, X], "prompts": [{"slice": z, "object": k,
"box": [x0, y0, x1, y1] | null, "points": [[x, y], ...], "labels": [1, 0, ...] | null}, ...]}`` in the
order they were given, coordinates in the input's pixels. Each prompt replaces object k's pixels on
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
                (prompt.get("box") is None and not prompt.get("points")):
            raise InputError(f"{path}: prompt {i} needs an integer 'object' and a 'box' or 'points'")
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
        if z != current:
            predictor.set_image(plane(image, z), image.meta.modality)
            current = z
        box, points, point_labels = prompt_arrays(prompt)
        mask, _ = segment_prompt(predictor, box, points, point_labels)
        paint_object(labels, z, int(prompt.get("object", 1)), mask)
    return labels
