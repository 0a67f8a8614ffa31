"""Prompt sessions: one prompt set on one cut -> one object's mask, and the replay of a session's prompts.

A session is what ``medseg serve`` records (``GET /api/images/{id}/session``) and ``medseg predict
--prompts session.json`` replays: ``{"shape": [Z, Y, X], "prompts": [...]}``, the prompts in the order
they were given, coordinates in the cut's pixels (x along its columns, y along its rows). Each prompt
names its cut: ``"slice": i`` along ``"plane"`` (``"axial"``, the default: Z slices (Y, X);
``"coronal"``: Y rows (Z, X); ``"sagittal"``: X columns (Z, Y); see :data:`PLANES`), and is one of

* a prompt set ``{"object": k, "box": [x0, y0, x1, y1] | null, "points": [[x, y], ...], "labels": [1, 0, ...] | null}``:
  object k's pixels on the cut become the mask it gives;
* brush strokes ``{"object": k, "strokes": [[x, y], ...], "radius": r, "erase": bool}``;
* a propagation ``{"object": k, "propagate": [lo, hi]}``: object k's mask on the cut walks over the cuts
  lo..hi of the same plane (:func:`medseg.infer.volume.walk_slices`), each cut prompted with the box of
  the previous one's mask;
* an automatic segmentation ``{"automatic": task}``: every class c of the universal model's task
  becomes object c on the cut (needs a universal model);
* 3D clicks in the volume ``{"object": k, "points3d": [[x, y, z], ...], "labels": [1, 0, ...] | null,
  "box3d": [x0, y0, z0, x1, y1, z1] | null, "refine": bool}`` (voxel indices, no ``slice``): object k's
  voxels in the whole volume become the mask a promptable 3D model gives
  (:class:`~medseg.infer.volume_prompts.VolumePredictor`); with ``refine``, the logits of object k's
  previous 3D prompt are its mask input (:func:`segment_volume_prompt`).

Replaying them in order gives the label map the page showed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.cases import plane
from ..errors import InputError
from ..io import Image
from .predictor import Predictor
from .volume import walk_slices

PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}  # plane name -> the label map's (Z, Y, X) axis it cuts


def plane_axis(name: str | None) -> int:
    """A plane's name (None: axial) -> the axis of (Z, Y, X) it cuts; InputError for another name."""
    if name is None:
        return 0
    if name not in PLANES:
        raise InputError(f"plane {name!r}: give one of {', '.join(PLANES)}")
    return PLANES[name]


def cuts(labels: np.ndarray, axis: int) -> np.ndarray:
    """labels (Z, Y, X) as a view whose first axis runs over the cuts of ``axis`` (writes go through)."""
    return np.moveaxis(labels, axis, 0)


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


def propagate(labels: np.ndarray, z: int, obj: int, lo: int, hi: int, segment_cut) -> list[int]:
    """Walk object ``obj``'s mask on cut ``z`` of labels (N, H, W) (a :func:`cuts` view) over the cuts
    ``lo..hi``, painting each, in place; ``segment_cut(i, box)`` -> (H, W) bool mask of cut ``i`` from a
    box. Returns the cuts painted. InputError when ``obj`` has no pixels on cut ``z``."""
    key_mask = labels[z] == obj
    if not key_mask.any():
        raise InputError(f"object {obj} has no pixels on slice {z}: segment it there first, then propagate")
    if not 0 <= lo <= z <= hi < len(labels):
        raise InputError(f"propagate over {lo}..{hi}: give a range that holds slice {z}, within 0..{len(labels) - 1}")

    def run(i: int, box: np.ndarray, _step: int) -> np.ndarray:
        mask = segment_cut(i, box)
        paint_object(labels, i, obj, mask)
        return mask

    return walk_slices(key_mask, z, lo, hi, run)


def paint_automatic(labels: np.ndarray, z: int, automatic: np.ndarray, classes) -> None:
    """Every class id c of ``classes`` becomes object c on cut ``z`` of labels (N, H, W), from an
    automatic label map (H, W), in place."""
    for c in classes:
        paint_object(labels, z, int(c), automatic == int(c))


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


def is_volume_prompt(prompt: dict) -> bool:
    """Whether a session prompt is 3D clicks / a 3D box in the volume (``points3d`` / ``box3d``)."""
    return prompt.get("points3d") is not None or prompt.get("box3d") is not None


def segment_volume_prompt(volume_predictor, prompt: dict, previous: np.ndarray | None = None):
    """A 3D session prompt on the volume predictor's current volume -> its
    :class:`~medseg.infer.volume_prompts.VolumePrediction` (mask (Z, Y, X) bool, logits); ``previous``: the
    logits of the object's previous 3D prompt, used as the mask input when the prompt says ``refine``."""
    points = prompt.get("points3d") or None
    labels = (prompt.get("labels") or [1] * len(points)) if points else None
    return volume_predictor.predict(points=points, point_labels=labels, box=prompt.get("box3d"),
                                    mask_input=previous if prompt.get("refine") else None)


def paint_volume(labels: np.ndarray, obj: int, mask: np.ndarray) -> None:
    """labels (Z, Y, X): object ``obj``'s voxels in the whole volume become ``mask`` (Z, Y, X) bool, in place."""
    labels[labels == obj] = 0
    labels[mask] = obj


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
                not any(prompt.get(k) for k in ("box", "points", "strokes", "propagate", "automatic", "points3d", "box3d")):
            raise InputError(f"{path}: prompt {i} needs an integer 'object' and a 'box', 'points', brush 'strokes', "
                             f"'propagate', 'automatic', or 3D 'points3d' / 'box3d'")
        if prompt.get("propagate") is not None and (not isinstance(prompt["propagate"], list) or len(prompt["propagate"]) != 2):
            raise InputError(f"{path}: prompt {i}: 'propagate' is [first slice, last slice]")
    return session


def replay(predictor: Predictor, image: Image, session: dict, source: Path | str = "the prompts",
           volume=None) -> np.ndarray:
    """The label map (Z, Y, X) uint16 that ``session``'s prompts give on ``image``, in order. Automatic
    prompts need ``predictor`` to be a :class:`~medseg.infer.automatic.AutoSegmenter`; 3D prompts need
    ``volume``, a :class:`~medseg.infer.volume_prompts.VolumePredictor` (the volume is encoded once)."""
    shape = image.spatial_shape
    if session.get("shape") is not None and tuple(session["shape"]) != tuple(shape):
        raise InputError(f"{source}: the prompts were made on an image of shape {session['shape']} (Z, Y, X); "
                         f"{image.meta.source} has {list(shape)}: replay them on the image they were made on")
    labels = np.zeros(shape, dtype=np.uint16)
    modality = image.meta.modality
    current = None

    def encode(axis: int, i: int) -> None:
        nonlocal current
        if current != (axis, i):
            predictor.set_image(plane(image, i, axis), modality)
            current = (axis, i)

    logits3d: dict[int, np.ndarray] = {}  # object -> the logits of its last 3D prompt
    if volume is not None and any(is_volume_prompt(p) for p in session["prompts"]):
        if image.array.shape[0] != 1 or image.array.shape[1] < 2:
            raise InputError(f"{source}: it holds 3D clicks, which need a one-channel volume; {image.meta.source} "
                             f"has shape {list(image.array.shape)} (C, Z, Y, X)")
        volume.set_volume(image.array[0], image.meta.spacing, modality)
    for n, prompt in enumerate(session["prompts"]):
        if is_volume_prompt(prompt):
            _replay_volume_prompt(volume, labels, prompt, logits3d, f"{source}: prompt {n}")
            continue
        axis = plane_axis(prompt.get("plane"))
        view = cuts(labels, axis)
        z, obj = int(prompt.get("slice") or 0), int(prompt.get("object") or 1)
        if not 0 <= z < len(view):
            raise InputError(f"{source}: prompt {n} is on slice {z}, outside the image's {len(view)} "
                             f"{prompt.get('plane', 'axial')} slice(s)")
        if prompt.get("strokes"):
            brush(view, z, obj, prompt["strokes"], float(prompt.get("radius", 3)), bool(prompt.get("erase")))
        elif prompt.get("automatic"):
            if not hasattr(predictor, "segment_embedding"):
                raise InputError(f"{source}: prompt {n} is an automatic segmentation ({prompt['automatic']}): "
                                 f"replay it with a universal model")
            result = predictor.segment(plane(image, z, axis), prompt["automatic"])
            paint_automatic(view, z, result.labels, result.classes)
            current = None
        elif prompt.get("propagate"):
            lo, hi = (int(v) for v in prompt["propagate"])

            def segment_cut(i: int, box: np.ndarray, axis=axis) -> np.ndarray:
                encode(axis, i)
                return segment_prompt(predictor, box)[0]

            propagate(view, z, obj, lo, hi, segment_cut)
        else:
            encode(axis, z)
            mask, _ = segment_prompt(predictor, *prompt_arrays(prompt))
            paint_object(view, z, obj, mask)
    return labels


def _replay_volume_prompt(volume, labels: np.ndarray, prompt: dict, logits3d: dict, where: str) -> None:
    """One 3D prompt of :func:`replay` (the volume already set): object k painted in the whole volume."""
    obj = int(prompt.get("object") or 1)
    if volume is None:
        raise InputError(f"{where} is a 3D click in the volume: replay it with a promptable 3D model "
                         f"(--model litemedsam-3d, or the server's --volume-model with --checkpoint W)")
    if prompt.get("refine") and obj not in logits3d:
        raise InputError(f"{where} refines object {obj}'s 3D segmentation, but no 3D prompt of object {obj} "
                         f"comes before it: the prompts file is incomplete")
    out = segment_volume_prompt(volume, prompt, logits3d.get(obj))
    logits3d[obj] = out.logits
    paint_volume(labels, obj, out.mask)
