"""Automatic (prompt-free) segmentation with a universal model, and automatic first prompts.

    seg = AutoSegmenter(build_model("universal", checkpoint="run/best.safetensors"))
    result = seg.segment(image, task="drishti_gs1_odoc")   # every class of the task, no prompt
    result.labels      # (H, W) uint8 label map in the task's class ids, at the image's resolution
    prompts = first_prompts(result.labels)                 # {class id: {"box", "point"}} (SqueezeSAM)
    mask = seg.refine(prompts[1]["box"])                   # the promptable path, same image embedding

The universal model's promptable path (box / clicks) is its base model's, so an automatic first box
or click can be refined with the usual corrective clicks (:meth:`AutoSegmenter.refine`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medseg.errors import InputError
from medseg.infer.predictor import Predictor
from medseg.data.preprocess import logits_to_input_size


@dataclass
class AutoResult:
    """labels: (H, W) uint8 label map (task class ids, 0 background); probabilities: (K, H, W) float32
    sigmoid of each class's logits; classes: {id: name} in the order of ``probabilities``."""

    labels: np.ndarray
    probabilities: np.ndarray
    classes: dict[int, str]
    task: str


class AutoSegmenter(Predictor):
    """A :class:`Predictor` over a universal model: ``segment(image, task)`` needs no prompt;
    ``predict`` / ``refine`` take prompts on the last image as usual.

    ``engine`` / ``precision`` / ``threads`` are the Predictor's: they run the image encoder and the
    prompt decoder (an ONNX engine exports both once); the automatic head reads the embedding in torch."""

    def __init__(self, model, device: str | torch.device | None = None, engine: str = "torch",
                 precision: str = "fp32", threads: int | None = None) -> None:
        from medseg.models.universal import UniversalSegmenter

        if not isinstance(model, UniversalSegmenter):
            raise InputError("automatic segmentation needs a universal model (e.g. --model universal with a "
                             "--checkpoint trained by the 'universal' objective)")
        super().__init__(model, device, engine=engine, precision=precision, threads=threads)
        self.universal = model  # moved and put in eval mode by the Predictor; the head runs in torch whatever the engine

    @property
    def tasks(self):
        return self.universal.tasks

    def modality_for(self, task: str) -> str | None:
        """The intensity window the task was trained with ("CT", "MR" or None: min-max only)."""
        return self.universal.automatic.task(task).window

    @torch.no_grad()
    def segment(self, image: np.ndarray, task: str) -> AutoResult:
        """image (H, W) or (H, W, C) -> every class of ``task`` (an InputError names an unknown task)."""
        info = self.universal.automatic.task(task)
        self.set_image(image, self.modality_for(task))
        return self.segment_embedding(task, info)

    @torch.no_grad()
    def segment_embedding(self, task: str, info=None) -> AutoResult:
        """Segment the image last given to ``set_image`` / ``set_embedding``."""
        from medseg.models.universal import label_map

        info = info or self.universal.automatic.task(task)
        logits, _, _ = self.universal.segment(self.embedding.to(self.device), [task])
        full = logits_to_input_size(logits[:, 0][None].float(), self.record)[0]   # (K, H, W)
        labels = label_map(full, list(info.classes)).to(torch.uint8)
        return AutoResult(labels.cpu().numpy(), torch.sigmoid(full).cpu().numpy(), dict(info.classes), task)

    def refine(self, box: np.ndarray | None = None, points: np.ndarray | None = None,
               point_labels: np.ndarray | None = None) -> np.ndarray:
        """Promptable segmentation of the current image from an (automatic) box and/or clicks -> bool (H, W)."""
        return self.predict(box=box, points=points, point_labels=point_labels).masks[0, 0]

    def refine_from_first_boxes(self, labels: np.ndarray, classes) -> dict[int, np.ndarray]:
        """The "automatic first box, then refine" protocol (SqueezeSAM): for each class id of
        ``classes``, the promptable mask (bool (H, W)) from the box around the largest component of
        that class in the automatic label map ``labels`` (H, W) of the current image; an empty mask
        where the automatic map has no such class. No ground truth is used."""
        prompts = first_prompts(labels)
        return {int(c): self.refine(box=prompts[c]["box"]) if c in prompts else np.zeros(labels.shape, dtype=bool)
                for c in classes}


def first_prompts(labels: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
    """Automatic first prompts from an automatic label map (SqueezeSAM's automatic first click).

    For each class id present: ``"box"`` (4,) x0, y0, x1, y1 around its largest connected component
    and ``"point"`` (2,) x, y at that component's most interior pixel (largest distance to its edge).
    Coordinates in the label map's pixels.
    """
    from medseg.data.masks import largest_component
    from medseg.data.prompts import deepest_point, mask_box

    out = {}
    for cid in [int(v) for v in np.unique(labels) if v > 0]:
        largest = largest_component(labels == cid)
        y, x = deepest_point(largest)
        out[cid] = {"box": mask_box(largest).astype(np.float64), "point": np.array([x, y], dtype=np.float64)}
    return out
