"""Report outputs: JSON, CSV, table and figure."""

import csv
import io
import json

import numpy as np
import pytest
from evalkit import disc, rectangle, write_case
from PIL import Image

from medseg.errors import InputError
from medseg.eval import Report, evaluate_dataset


@pytest.fixture
def report(tmp_path, predictor):
    data = tmp_path / "data"
    write_case(data, "rect", rectangle())
    write_case(data, "circle", disc())
    write_case(data, "normal", np.zeros((32, 32), np.uint8))
    speck = np.zeros((32, 32), np.uint8)
    speck[1:3, 1:3] = 255
    write_case(data, "speck", speck)  # hd95 NaN
    write_case(data, "broken", rectangle())
    (data / "images" / "broken.png").write_bytes(b"junk")
    return evaluate_dataset(predictor, data, split="all", progress=False)


def test_json_shape_and_nan_as_null(report, tmp_path):
    path = report.to_json(tmp_path / "out" / "report.json")
    data = json.loads(path.read_text())
    assert set(data) == {"dataset", "split", "prompt", "summary", "cases", "errors"}
    assert data["split"] == "all" and data["prompt"] == "box"
    assert [c["stem"] for c in data["cases"]] == ["circle", "normal", "rect", "speck"]
    dice = [c["dice"] for c in data["cases"]]
    assert data["summary"]["dice"] == pytest.approx(sum(dice) / 4)
    speck = data["cases"][3]
    assert speck["dice"] == 0.0 and speck["hd95"] is None
    assert data["summary"]["hd95"] is not None  # NaN left out of the mean
    assert data["summary"]["n_cases"] == 4 and data["summary"]["n_errors"] == 1
    assert data["summary"]["per_class"]["1"]["n"] == 4
    assert data["errors"][0]["stem"] == "broken"
    assert "NaN" not in path.read_text()


def test_outputs_are_replaced_only_with_overwrite(report, tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")
    with pytest.raises(InputError, match="--overwrite"):
        report.to_json(path)
    assert path.read_text() == "old"
    report.to_json(path, overwrite=True)
    assert json.loads(path.read_text())["cases"]


def test_csv(report, tmp_path):
    path = report.to_csv(tmp_path / "cases.csv")
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["stem", "class_id", "class_name", "dice", "iou", "hd95", "nsd",
                             "n_prompts", "empty_gt", "seconds"]
    assert [r["stem"] for r in rows] == ["circle", "normal", "rect", "speck"]
    assert float(rows[2]["dice"]) == pytest.approx(1.0)
    assert rows[3]["hd95"] == "" and rows[1]["empty_gt"] == "True"


def test_figure_is_a_png(report, tmp_path):
    assert len(report.overlays) >= 2
    path = report.save_figure(tmp_path / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        img.verify()
    bars_only = report.save_figure(tmp_path / "bars.png", overlays=[])
    with Image.open(bars_only) as img:
        assert img.format == "PNG"


def test_empty_report_figure_and_summary(tmp_path):
    empty = Report(dataset=str(tmp_path), split="test", prompt="box")
    assert empty.summary["dice"] is None and empty.summary["n_cases"] == 0
    with Image.open(empty.save_figure(tmp_path / "empty.png")) as img:
        assert img.format == "PNG"


def test_outputs_inside_the_dataset_images_or_masks_are_refused(report):
    data = report.dataset
    for target in (f"{data}/images/report.json", f"{data}/masks/sub/x.csv", f"{data}/masks", f"{data}/splits.json"):
        with pytest.raises(InputError, match="dataset's own files"):
            report.to_json(target, overwrite=True)
    with pytest.raises(InputError):
        report.to_csv(f"{data}/masks/cases.csv")
    with pytest.raises(InputError):
        report.save_figure(f"{data}/images/fig.png")
    assert report.to_json(f"{data}/report.json").is_file()  # next to them is fine


def test_print_table(report):
    out = io.StringIO()
    report.print_table(file=out, cases=True)
    text = out.getvalue()
    assert "dice" in text and "all" in text and "circle" in text
    assert "4 cases scored, 1 errors" in text and "broken" in text
