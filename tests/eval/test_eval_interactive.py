"""evaluate_interactive: Dice after each round of simulated clicks, with a fake that obeys clicks."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PILImage
from evalkit import disc, prompt_masks, rectangle, write_case, write_json

from medseg.data.prompt_sim import simulate_interaction
from medseg.errors import InputError
from medseg.eval.interactive import evaluate_interactive, print_rounds, save_rounds_figure
from medseg.data.cases import Case, load_case
from medseg.io import Image, Label
from medseg.io.meta import Meta


def round_disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


class ClickPredictor:
    """A box predicts the box filled; each positive click then adds, each negative click removes,
    a disc of radius 4. Records calls; ``fail_on`` = an image width that makes predict raise."""

    def __init__(self, fail_on: int | None = None):
        self.shape, self.calls, self.set_images, self.fail_on = None, [], 0, fail_on

    def set_image(self, image):
        self.shape = image.shape[:2]
        self.set_images += 1

    def predict(self, box=None, points=None, point_labels=None, mask_input=None, multimask=False):
        if self.shape[1] == self.fail_on:
            raise RuntimeError("model exploded")
        self.calls.append({"box": box, "points": points, "mask_input": mask_input})
        masks = prompt_masks(self.shape, box, points, point_labels, radius=4)
        n = len(masks)
        logits = np.zeros((n, 1, 256, 256), dtype=np.float32)
        return SimpleNamespace(masks=masks, scores=np.ones((n, 1)), logits=logits)


@pytest.fixture
def dataset(tmp_path):
    """circle: one disc; multi: class 1 = two rectangles, class 2 = one disc; blank: no foreground;
    broken: image and mask of different sizes."""
    write_case(tmp_path, "circle", disc())
    multi = rectangle((64, 80), (4, 20), (4, 30), 1) + rectangle((64, 80), (30, 44), (4, 24), 1)
    multi[round_disc((64, 80), (40, 58), 12)] = 2
    write_case(tmp_path, "multi", multi)
    write_case(tmp_path, "blank", np.zeros((32, 32), np.uint8))
    write_case(tmp_path, "broken", rectangle(shape=(40, 40), y=(5, 20), x=(5, 20)))
    PILImage.fromarray(np.zeros((50, 50), np.uint8)).save(tmp_path / "images" / "broken.png")
    write_json(tmp_path / "classes.json", {"0": "background", "1": "bone", "2": "tumour"})
    return tmp_path


def test_dice_per_round_improves_and_bad_cases_are_recorded(dataset):
    predictor = ClickPredictor()
    result = evaluate_interactive(predictor, dataset, split="all", rounds=4, progress=False)
    assert result["rounds"] == 4 and len(result["dice_per_round"]) == 4
    rows = {(r["stem"], r["class_id"]): r for r in result["cases"]}
    assert set(rows) == {("circle", 1), ("multi", 1), ("multi", 2)}
    assert rows[("multi", 1)]["n_objects"] == 2 and rows[("multi", 2)]["class_name"] == "tumour"
    for row in result["cases"]:
        assert len(row["dice_per_round"]) == 4 and all(0 <= d <= 1 for d in row["dice_per_round"])
        assert row["dice_per_round"][-1] > row["dice_per_round"][0]
    means = result["dice_per_round"]
    assert means == sorted(means) and means[-1] > means[0]
    assert means[0] == pytest.approx(np.mean([r["dice_per_round"][0] for r in result["cases"]]))
    assert [e["stem"] for e in result["errors"]] == ["broken"] and "50" in result["errors"][0]["message"]
    assert result["skipped"] == ["blank"]
    assert predictor.set_images == 2  # once per scored case, not per object


def test_each_component_is_simulated_alone_and_the_union_scored(dataset):
    result = evaluate_interactive(ClickPredictor(), dataset, split="all", rounds=3, progress=False)
    (row,) = [r for r in result["cases"] if (r["stem"], r["class_id"]) == ("multi", 1)]
    _, label = load_case(Case("case", dataset / "images" / "multi.png", dataset / "masks" / "multi.png"))
    gt = label.array[0] == 1
    top, bottom = gt.copy(), gt.copy()
    top[25:], bottom[:25] = False, False
    runs = [simulate_interaction(ClickPredictor(), np.zeros(gt.shape), part, 3, "point") for part in (top, bottom)]
    union = [a[0] | b[0] for a, b in zip(*runs)]
    expected = [2 * (u & gt).sum() / (u.sum() + gt.sum()) for u in union]
    assert row["dice_per_round"] == pytest.approx(expected)


def test_box_first_prompts_the_box_every_round(dataset):
    predictor = ClickPredictor()
    result = evaluate_interactive(predictor, dataset, split="all", rounds=2, limit=3, progress=False, first="box")
    # natural order: blank (skipped), broken (error), circle; multi is past the limit
    assert [r["stem"] for r in result["cases"]] == ["circle"] and result["first"] == "box"
    assert len(predictor.calls) == 2 and all(c["box"] is not None for c in predictor.calls)
    assert predictor.calls[0]["points"] is None and predictor.calls[1]["points"].shape == (1, 1, 2)
    assert predictor.calls[1]["mask_input"].shape == (1, 1, 256, 256)


def test_predictor_failure_and_volumes_become_errors(dataset):
    result = evaluate_interactive(ClickPredictor(fail_on=80), dataset, split="all", rounds=2, progress=False)
    messages = {e["stem"]: e["message"] for e in result["errors"]}
    assert messages["multi"] == "RuntimeError: model exploded" and "circle" not in messages

    def volume_loader(case):
        return Image(np.zeros((1, 3, 16, 16)), Meta()), Label(np.ones((3, 16, 16), np.uint8), Meta())

    result = evaluate_interactive(ClickPredictor(), dataset, split="all", rounds=2, progress=False,
                                  loader=volume_loader)
    assert result["cases"] == [] and result["dice_per_round"] == [None, None]
    assert all("2D" in e["message"] for e in result["errors"])


def test_arguments_are_checked(dataset):
    for kwargs, match in (({"rounds": 0}, "rounds"), ({"limit": 0}, "limit"), ({"first": "lasso"}, "first")):
        with pytest.raises(InputError, match=match):
            evaluate_interactive(ClickPredictor(), dataset, split="all", progress=False, **kwargs)


def test_table_and_figure(dataset, tmp_path_factory):
    result = evaluate_interactive(ClickPredictor(), dataset, split="all", rounds=3, progress=False, first="box")
    out = io.StringIO()
    print_rounds(result, file=out)
    text = out.getvalue()
    assert "box + 1 click " in text and "box + 2 clicks" in text
    assert f"{result['dice_per_round'][2]:6.3f}" in text
    assert "2 cases (3 class rows) scored, 1 errors, 1 without foreground skipped" in text
    assert "error broken" in text
    target = save_rounds_figure(result, tmp_path_factory.mktemp("out") / "sub" / "rounds.png")
    from PIL import Image

    with Image.open(target) as im:
        picture = np.asarray(im.convert("RGB")).astype(int)
    assert picture.shape[:2] == (480, 720)  # 6 x 4 inches at 120 dpi
    assert (np.abs(picture - (0xD6, 0x27, 0x28)).max(-1) <= 12).any()  # the mean line is drawn
    with pytest.raises(InputError, match="dataset's own files"):
        save_rounds_figure(result, dataset / "images" / "rounds.png")
    with pytest.raises(InputError, match="exists"):
        save_rounds_figure(result, target)
    assert save_rounds_figure(result, target, overwrite=True) == target
