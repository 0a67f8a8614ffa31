"""evaluate_dataset with a fake predictor that fills each prompted box."""

import math

import numpy as np
import pytest
from PIL import Image
from evalkit import BoxFillPredictor, disc, rectangle, write_case, write_json

from medseg.errors import InputError
from medseg.eval import evaluate_dataset
from medseg.data.cases import load_case


def rows_by_stem(report):
    return {(r["stem"], r["class_id"]): r for r in report.cases}


def test_rectangle_is_perfect_and_circle_is_close(tmp_path, predictor):
    write_case(tmp_path, "rect", rectangle())
    write_case(tmp_path, "circle", disc())
    report = evaluate_dataset(predictor, tmp_path, split="all", progress=False)
    rows = rows_by_stem(report)
    assert rows[("rect", 1)]["dice"] == pytest.approx(1.0)
    assert rows[("rect", 1)]["hd95"] == pytest.approx(0.0)
    assert 0.7 < rows[("circle", 1)]["dice"] < 1.0
    assert report.errors == []
    assert report.summary["n_cases"] == 2
    assert report.summary["dice"] == pytest.approx((1.0 + rows[("circle", 1)]["dice"]) / 2)


def test_all_components_of_a_class_go_in_one_batched_call(tmp_path, predictor):
    mask = rectangle(shape=(64, 80), y=(5, 20), x=(5, 30)) | rectangle(shape=(64, 80), y=(35, 60), x=(40, 75))
    mask[62:64, 0:2] = 255  # 4 px speck: no prompt, but still part of the ground truth
    write_case(tmp_path, "two", mask)
    report = evaluate_dataset(predictor, tmp_path, split="all", progress=False, overlays=False)
    assert len(predictor.calls) == 1
    assert predictor.calls[0]["box"].shape == (2, 4)
    (row,) = report.cases
    assert row["n_prompts"] == 2
    assert row["dice"] == pytest.approx(2 * (375 + 875) / (2 * (375 + 875) + 4))


def test_multi_class_mask_is_scored_per_class(tmp_path, predictor):
    mask = rectangle(value=1) + rectangle(y=(40, 60), x=(10, 70), value=2)
    write_case(tmp_path, "multi", mask)
    write_json(tmp_path / "classes.json", {"0": "background", "1": "liver", "2": "kidney"})
    report = evaluate_dataset(predictor, tmp_path, split="all", progress=False, overlays=False)
    assert [(r["class_id"], r["class_name"]) for r in report.cases] == [(1, "liver"), (2, "kidney")]
    assert all(r["dice"] == pytest.approx(1.0) for r in report.cases)
    assert predictor.set_images == 1 and len(predictor.calls) == 2
    assert set(report.summary["per_class"]) == {"1", "2"}
    assert report.summary["per_class"]["2"]["class_name"] == "kidney"


def test_empty_ground_truth_is_scored_without_a_prompt(tmp_path, predictor):
    write_case(tmp_path, "normal", np.zeros((32, 32), np.uint8))
    report = evaluate_dataset(predictor, tmp_path, split="all", progress=False)
    (row,) = report.cases
    assert row["empty_gt"] is True and row["n_prompts"] == 0 and row["class_id"] == 1
    assert (row["dice"], row["iou"], row["hd95"], row["nsd"]) == (1.0, 1.0, 0.0, 1.0)
    assert predictor.calls == []


def test_class_with_only_tiny_pieces_gets_an_empty_prediction(tmp_path, predictor):
    mask = np.zeros((32, 32), np.uint8)
    mask[3:5, 3:5] = 255
    write_case(tmp_path, "speck", mask)
    report = evaluate_dataset(predictor, tmp_path, split="all", progress=False)
    (row,) = report.cases
    assert row["n_prompts"] == 0 and row["dice"] == 0.0 and math.isnan(row["hd95"])
    assert row["empty_gt"] is False
    assert report.summary["hd95"] is None and report.summary["n_hd95_undefined"] == 1


def test_bad_cases_are_recorded_and_the_rest_scored(tmp_path, capsys):
    write_case(tmp_path, "good", rectangle())
    write_case(tmp_path, "corrupt", rectangle())
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    write_case(tmp_path, "mismatch", rectangle(shape=(40, 40), y=(5, 20), x=(5, 20)))
    write_case(tmp_path, "bomb", rectangle(shape=(64, 77)))  # width 77 makes the predictor raise
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(tmp_path / "images" / "mismatch.png")
    report = evaluate_dataset(BoxFillPredictor(fail_on=77), tmp_path, split="all", progress=False)
    assert [r["stem"] for r in report.cases] == ["good"]
    errors = {e["stem"]: e["message"] for e in report.errors}
    assert set(errors) == {"corrupt", "mismatch", "bomb"}
    assert "corrupt.png" in errors["corrupt"]
    assert "mismatch.png" in errors["mismatch"] and "(1, 50, 50)" in errors["mismatch"]
    assert "RuntimeError: model exploded" in errors["bomb"]
    assert report.summary["n_errors"] == 3
    assert "3 of 4 cases could not be evaluated" in capsys.readouterr().err


def test_point_prompts(tmp_path, predictor):
    write_case(tmp_path, "rect", rectangle())
    report = evaluate_dataset(predictor, tmp_path, split="all", prompt="point", progress=False, overlays=False)
    (call,) = predictor.calls
    assert call["box"] is None
    assert call["points"].shape == (1, 1, 2) and call["point_labels"].tolist() == [[1]]
    x, y = call["points"][0, 0]
    assert 15 <= x < 50 and 10 <= y < 30
    assert 0 < report.cases[0]["dice"] < 1  # a 7x7 square inside a 20x35 rectangle


def test_split_limit_and_arguments(tmp_path, predictor):
    for stem in ("a", "b", "c"):
        write_case(tmp_path, stem, rectangle())
    write_json(tmp_path / "splits.json", {"train": ["a"], "test": ["b", "c"]})
    report = evaluate_dataset(predictor, tmp_path, progress=False, limit=1)
    assert [r["stem"] for r in report.cases] == ["b"]
    assert report.split == "test" and report.prompt == "box"
    with pytest.raises(InputError, match="prompt"):
        evaluate_dataset(predictor, tmp_path, prompt="scribble")
    with pytest.raises(InputError, match="limit"):
        evaluate_dataset(predictor, tmp_path, limit=0)


def test_custom_loader_and_latency(tmp_path, predictor):
    write_case(tmp_path, "rect", rectangle())
    seen = []

    def loader(case):
        seen.append((case.image_path.name, case.mask_path.name))
        return load_case(case)

    report = evaluate_dataset(predictor, tmp_path, split="all", progress=False, loader=loader, overlays=False)
    assert seen == [("rect.png", "rect.png")]
    assert report.cases[0]["seconds"] >= 0.0 and report.overlays == []


def test_overlays_keep_best_median_worst(tmp_path, predictor):
    write_case(tmp_path, "rect", rectangle())
    write_case(tmp_path, "circle", disc())
    write_case(tmp_path, "normal", np.zeros((32, 32), np.uint8))
    write_case(tmp_path, "triangle", np.tril(np.full((40, 40), 255, np.uint8)))  # Dice about 2/3
    report = evaluate_dataset(predictor, tmp_path, split="all", progress=False)
    titles = [o.title for o in report.overlays]
    assert titles == ["best: rect (class_1)", "median: circle (class_1)", "worst: triangle (class_1)"]
    assert len(report.cases) == 4  # the empty-GT case is scored but not drawn
    assert all(o.gt.shape == o.pred.shape == o.image.shape[:2] for o in report.overlays)
