"""Automatic segmentation with a universal model (no prompt) and its automatic first prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.infer.automatic import AutoSegmenter, first_prompts
from medseg.models import build_model


@pytest.fixture
def segmenter() -> AutoSegmenter:
    torch.manual_seed(0)
    model = build_model("universal-tiny")
    model.automatic.add_task("fundus", "fundus", {1: "disc", 2: "cup"})
    with torch.no_grad():  # a bias that makes the cup win everywhere: the label map is all 2
        model.automatic.decoder.output_hypernetworks_mlps[0].layers[-1].bias.fill_(0.0)
    return AutoSegmenter(model, device="cpu")


def test_segment_returns_every_class_at_the_image_resolution(segmenter):
    image = np.random.default_rng(0).integers(0, 255, (40, 52, 3)).astype(np.uint8)
    result = segmenter.segment(image, "fundus")
    assert result.labels.shape == (40, 52) and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1, 2}
    assert result.probabilities.shape == (2, 40, 52) and result.classes == {1: "disc", 2: "cup"}
    best = result.probabilities.argmax(0) + 1
    above = result.probabilities.max(0) > 0.5
    np.testing.assert_array_equal(result.labels, np.where(above, best, 0))


def test_refine_uses_the_promptable_path_on_the_same_image(segmenter):
    """refine() after segment() is the promptable model's answer on that image: the same mask as a
    plain Predictor over the same model given the same image and box; another image gives another."""
    from medseg.infer import Predictor

    rng = np.random.default_rng(1)
    image, other = (rng.integers(0, 255, (40, 52)).astype(np.uint8) for _ in range(2))
    box = np.array([5, 5, 30, 30])
    segmenter.segment(image, "fundus")
    mask = segmenter.refine(box=box)
    plain = Predictor(segmenter.model, device="cpu")
    plain.set_image(image, segmenter.modality_for("fundus"))
    expected = plain.predict(box=box)
    assert mask.shape == (40, 52) and mask.dtype == bool
    np.testing.assert_array_equal(mask, expected.masks[0, 0])
    plain.set_image(other, segmenter.modality_for("fundus"))
    assert not np.allclose(plain.predict(box=box).logits, expected.logits)  # the image matters


def test_unknown_task_and_non_universal_model_are_clear_errors(segmenter):
    with pytest.raises(InputError, match="unknown task 'liver'"):
        segmenter.segment(np.zeros((8, 8)), "liver")
    with pytest.raises(InputError, match="needs a universal model"):
        AutoSegmenter(build_model("litemedsam-tiny"))


def test_refine_from_first_boxes_prompts_each_class_with_its_automatic_box(segmenter):
    """The "automatic first box, then refine" protocol: each class's mask comes from the box around
    its largest automatic component; a class the automatic map lacks gets an empty mask."""
    image = np.random.default_rng(2).integers(0, 255, (40, 52)).astype(np.uint8)
    segmenter.segment(image, "fundus")
    labels = np.zeros((40, 52), dtype=np.uint8)
    labels[3:6, 3:6] = 2
    labels[10:30, 12:40] = 2  # the largest component of class 2; no class 1
    masks = segmenter.refine_from_first_boxes(labels, [1, 2])
    assert set(masks) == {1, 2} and not masks[1].any()
    np.testing.assert_array_equal(masks[2], segmenter.refine(box=np.array([12, 10, 39, 29])))


def test_first_prompts_box_the_largest_component_and_click_its_interior():
    labels = np.zeros((30, 40), dtype=np.uint8)
    labels[2:5, 2:5] = 1                     # a small blob of class 1
    labels[10:28, 5:35] = 1                  # the largest component of class 1
    labels[10:28, 5:15] = 0                  # ... an L-free rectangle 10..27 x 15..34
    labels[0:3, 30:40] = 2
    prompts = first_prompts(labels)
    assert set(prompts) == {1, 2}
    np.testing.assert_array_equal(prompts[1]["box"], [15, 10, 34, 27])
    x, y = prompts[1]["point"].astype(int)
    assert labels[y, x] == 1 and 15 < x < 34 and 10 < y < 27
    assert first_prompts(np.zeros((5, 5), dtype=np.uint8)) == {}


@pytest.mark.data
def test_every_2d_task_of_the_shared_data_resolves_and_ct_slices_give_24_organs(shared_data, tmp_path, real_weights):
    import yaml

    from medseg.data.tasks import load_tasks
    from medseg.data.cases import plane
    from medseg.io import read_image

    repo = Path(__file__).resolve().parents[2]
    entries = yaml.safe_load((repo / "configs" / "tasks_2d.yaml").read_text())
    for entry in entries.values():  # the same file, pointed at wherever the shared data is
        entry["root"] = str(shared_data / Path(entry["root"]).name)
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(entries))
    tasks = load_tasks(tmp_path / "tasks.yaml")
    assert len(tasks) == 8 and tasks["drishti_gs1_odoc"].classes == {1: "optic_disc", 2: "optic_cup"}
    ct = tasks["ct_organ_slices_demo"]
    assert len(ct.classes) == 24 and ct.modality == "CT" and ct.window is None  # 8-bit slices: no HU window

    torch.manual_seed(0)
    model = build_model("universal", pretrained=True)
    model.automatic.add_task(ct.name, ct.modality, ct.classes, ct.window)
    image = plane(read_image(sorted((ct.root / "images").iterdir())[0]))
    result = AutoSegmenter(model, device="cpu").segment(image, ct.name)
    assert result.labels.shape == image.shape[:2] and result.probabilities.shape == (24, *image.shape[:2])
    assert set(np.unique(result.labels)) <= {0, *ct.classes}
