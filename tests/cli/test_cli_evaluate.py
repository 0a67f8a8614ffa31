"""``medseg evaluate`` on a tiny images/ + masks/ + splits.json dataset (and on real data)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

TINY = ["--model", "litemedsam-tiny", "--device", "cpu", "--no-progress"]
COLUMNS = ["stem", "class_id", "class_name", "dice", "iou", "hd95", "nsd", "n_prompts", "empty_gt", "seconds"]


def test_box_prompt_writes_json_csv_and_figure(cli, dataset, work):
    j, c, f = work / "r" / "report.json", work / "r" / "rows.csv", work / "r" / "fig.png"
    r = cli("evaluate", dataset, "--split", "test", "--prompt", "box", "--json", j, "--csv", c, "--figure", f, *TINY)
    assert r.rc == 0, r.err
    for path in (j, c, f):
        assert f"wrote {path}" in r.out
    assert "3 cases scored, 0 errors" in r.out

    report = json.loads(j.read_text())
    assert report["split"] == "test" and report["prompt"] == "box"
    assert 0.0 <= report["summary"]["dice"] <= 1.0
    assert report["summary"]["n_cases"] == 3 and report["summary"]["n_errors"] == 0
    assert [case["stem"] for case in report["cases"]] == ["case2", "case3", "case4"]  # not the train case
    for case in report["cases"]:
        assert 0.0 <= case["dice"] <= 1.0
        assert case["n_prompts"] == 1 and case["class_id"] == 1

    with c.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == COLUMNS
    assert [row[0] for row in rows[1:]] == ["case2", "case3", "case4"]
    assert all(0.0 <= float(row[3]) <= 1.0 for row in rows[1:])

    with Image.open(f) as im:
        picture = np.asarray(im.convert("RGB"))
    assert picture.shape[1] == 960 and picture.shape[0] == 700  # bars above 3 overlays (3.2 in each, 100 dpi)
    assert _has_colour(picture, (0x00, 0xE0, 0x00)), "no ground-truth outline (green) in the figure"
    assert _has_colour(picture, (0x48, 0x78, 0xD0)), "no Dice bars (blue) in the figure"
    assert list(work.iterdir()) == [work / "r"]  # no default figure besides the one asked for


def _has_colour(picture: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 12) -> bool:
    """Whether an (H, W, 3) picture has pixels of about that colour."""
    return bool((np.abs(picture.astype(int) - np.array(rgb)).max(axis=-1) <= tolerance).any())


def test_point_prompt_with_limit_writes_no_figure_unless_asked(cli, dataset, work):
    j = work / "p.json"
    r = cli("evaluate", dataset, "--prompt", "point", "--limit", 1, "--json", j, *TINY)
    assert r.rc == 0, r.err
    report = json.loads(j.read_text())
    assert report["prompt"] == "point" and report["split"] == "test"  # test is the default split
    assert [case["stem"] for case in report["cases"]] == ["case2"]
    assert report["summary"]["n_cases"] == 1
    assert 0.0 <= report["cases"][0]["dice"] <= 1.0
    assert list(work.iterdir()) == [j]  # files only where asked: no figure in the current folder


def test_split_all_and_train(cli, dataset, work):
    j = work / "all.json"
    assert cli("evaluate", dataset, "--split", "all", "--json", j, *TINY).rc == 0
    assert [c["stem"] for c in json.loads(j.read_text())["cases"]] == ["case1", "case2", "case3", "case4"]
    assert cli("evaluate", dataset, "--split", "train", "--json", j, "--overwrite", *TINY).rc == 0
    assert [c["stem"] for c in json.loads(j.read_text())["cases"]] == ["case1"]


def test_corrupt_image_is_reported_and_the_rest_scored(cli, dataset, work):
    (dataset / "images" / "case3.png").write_text("not a picture at all\n")
    j, c = work / "r.json", work / "r.csv"
    r = cli("evaluate", dataset, "--json", j, "--csv", c, *TINY)
    assert r.rc == 1, r.err  # done, but a case failed
    assert "1 of 3 cases failed" in r.err
    report = json.loads(j.read_text())
    assert [case["stem"] for case in report["cases"]] == ["case2", "case4"]
    assert [e["stem"] for e in report["errors"]] == ["case3"]
    assert "case3.png" in report["errors"][0]["message"]
    assert report["summary"]["n_errors"] == 1 and report["summary"]["n_cases"] == 2
    assert "case3" in r.err and "1 of 3 cases could not be evaluated" in r.err
    assert "2 cases scored, 1 errors" in r.out
    with c.open(newline="") as handle:
        assert len(list(csv.reader(handle))) == 3  # header + 2 rows


@pytest.mark.parametrize("make", ["empty", "only_images", "missing"])
def test_folder_of_neither_layout_exits_2(cli, tmp_path, work, make):
    folder = tmp_path / "not_a_dataset"
    if make != "missing":
        folder.mkdir()
        (folder / "readme.txt").write_text("hello")
    if make == "only_images":
        (folder / "images").mkdir()
    j = work / "r.json"
    r = cli("evaluate", folder, "--json", j, *TINY)
    assert r.rc == 2
    assert "medseg evaluate: error:" in r.err and str(folder) in r.err
    assert "images/ + masks/" in r.err  # says what layout is expected
    assert not j.exists()
    assert list(work.iterdir()) == []  # no figure either


def test_unknown_split_exits_2(cli, dataset, work):
    r = cli("evaluate", dataset, "--split", "validation", *TINY)
    assert r.rc == 2
    assert "validation" in r.err and "test" in r.err and "train" in r.err  # lists the available ones


def test_bad_limit_exits_2(cli, dataset, work):
    r = cli("evaluate", dataset, "--limit", 0, *TINY)
    assert r.rc == 2 and "limit" in r.err


def test_refuses_to_write_into_the_dataset(cli, dataset, work):
    target = dataset / "masks" / "report.json"
    r = cli("evaluate", dataset, "--json", target, *TINY)
    assert r.rc == 2 and "dataset's own files" in r.err
    assert not target.exists()


@pytest.mark.slow
@pytest.mark.data
def test_real_model_on_kvasir(cli, shared_data, real_weights, work):
    j = work / "kvasir.json"
    r = cli("evaluate", shared_data / "kvasir_seg", "--split", "test", "--prompt", "box", "--limit", 3,
            "--json", j, "--figure", work / "kvasir.png", "--device", "cpu", "--no-progress")
    assert r.rc == 0, r.err
    report = json.loads(j.read_text())
    assert report["summary"]["n_cases"] == 3 and report["summary"]["n_errors"] == 0
    assert report["summary"]["dice"] > 0.8, report["cases"]


def test_evaluate_clicks_reports_dice_per_round(cli, dataset, tmp_path):
    out_json, fig = tmp_path / "clicks.json", tmp_path / "clicks.png"
    r = cli("evaluate", dataset, "--prompt", "clicks", "--rounds", "2", "--first", "box", "--limit", "1",
            "--json", out_json, "--figure", fig, "--model", "litemedsam-tiny", "--no-progress")
    assert r.rc == 0, r.err
    result = json.loads(out_json.read_text())
    assert result["rounds"] == 2 and len(result["dice_per_round"]) == 2
    assert "box + 1 click" in r.out
    with Image.open(fig) as im:
        picture = np.asarray(im.convert("RGB"))
    assert picture.shape[:2] == (480, 720)  # 6 x 4 inches at 120 dpi
    assert _has_colour(picture, (0xD6, 0x27, 0x28)), "no mean-Dice line (red) in the rounds figure"
