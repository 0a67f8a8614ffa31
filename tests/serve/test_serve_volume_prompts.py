"""3D clicks in medseg serve: ``POST /api/images/{id}/segment3d`` paints an object through the whole volume
as one undo step, a click that goes on from the object's last 3D prompt refines it, bad requests are 400s
that say what to do (409 without a 3D model), and ``medseg predict --prompts`` replays the session.

The 3D model is litemedsam-3d-tiny with random weights (the mechanics, not the quality), its last bias
shifted so that a click selects a part of the volume rather than all of it; the 2D predictor is its base,
so a session mixing 2D and 3D prompts replays with ``--model litemedsam-3d-tiny --checkpoint``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medseg.errors import CheckpointError, MedsegError
from medseg.infer import Predictor
from medseg.infer.volume_prompts import VolumePredictor
from medseg.io import read_label, write_image
from medseg.models import build_model
from medseg.serve.state import VolumeModel
from servekit import make_client, make_volume_client, png_upload


@pytest.fixture(scope="module")
def ball() -> np.ndarray:
    """(Z=8, Y=32, X=32) float32: a bright ellipsoid around (z, y, x) = (4, 16, 15) in noise."""
    zz, yy, xx = np.mgrid[:8, :32, :32]
    volume = np.where(((zz - 4) / 3) ** 2 + ((yy - 16) / 9) ** 2 + ((xx - 15) / 9) ** 2 < 1, 200.0, 30.0)
    return (volume + np.random.default_rng(0).normal(0, 5, volume.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def model3d(ball, tmp_path_factory):
    """(model, its checkpoint): the tiny 3D model, its logits shifted so one click selects ~15% of the ball volume."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_model("litemedsam-3d-tiny")
    probe = VolumePredictor(model, device="cpu")
    probe.set_volume(ball, (1.0, 1.0, 1.0), None)
    logits = probe.predict(points=[[15, 16, 4]], point_labels=[1]).logits
    with torch.no_grad():
        model.volume_head.fine[-1].bias -= float(np.quantile(logits, 0.85))
    path = tmp_path_factory.mktemp("prompt3d") / "tiny3d.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


@pytest.fixture
def served(model3d, tmp_path):
    """(client, store) with 3D clicks; the 2D predictor is the 3D model's base."""
    model, _ = model3d
    volume = VolumeModel(VolumePredictor(model, device="cpu"), "litemedsam-3d-tiny", "checkpoint", note="")
    client, store = make_volume_client(Predictor(model.base, device="cpu"), volume, root=tmp_path)
    yield client, store
    store.close()


def open_ball(client, folder, ball) -> str:
    write_image(ball, folder / "ball.nii.gz", overwrite=True)
    return client.post("/api/images/open", json={"path": "ball.nii.gz"}).json()["image_id"]


def post3d(client, image_id, **body):
    return client.post(f"/api/images/{image_id}/segment3d", json=body)


def test_a_3d_click_paints_the_object_through_the_volume_and_undo_restores_it(served, tmp_path, ball):
    client, store = served
    health = client.get("/api/health").json()
    assert health["volume_clicks"] is True and health["volume_model"] == "litemedsam-3d-tiny"
    image_id = open_ball(client, tmp_path, ball)
    labels = store.get(image_id).labels
    client.post(f"/api/images/{image_id}/brush", json={"strokes": [[2, 2], [30, 2]], "slice": 4, "radius": 1})
    before = labels.copy()

    first = post3d(client, image_id, object=2, points=[[15, 16, 4]], labels=[1])
    assert first.status_code == 200, first.json()
    answer = first.json()
    expected = store.volume.predictor.predict(points=[[15, 16, 4]], point_labels=[1]).mask
    assert 1 < expected.any(axis=(1, 2)).sum() and expected.mean() < 0.5  # an object on several slices, not all
    np.testing.assert_array_equal(labels == 2, expected)
    assert answer["object"] == 2 and answer["voxels"] == int(expected.sum())
    assert answer["encoded"] is True and answer["refined"] is False
    zs = np.flatnonzero(expected.any(axis=(1, 2)))  # object 2 had no voxels before
    assert answer["changed"] == [int(zs[0]), int(zs[-1])]
    assert client.get(f"/api/images/{image_id}").json()["objects"]["2"] == "object 2"
    after_first = labels.copy()

    second = post3d(client, image_id, object=2, points=[[15, 16, 4], [3, 3, 1]], labels=[1, 0]).json()
    assert second["refined"] is True and second["encoded"] is False and store.volume_runs == 1
    after_second = labels.copy()
    prompts = client.get(f"/api/images/{image_id}/session").json()["prompts"]
    assert prompts[-2:] == [
        {"object": 2, "points3d": [[15.0, 16.0, 4.0]], "labels": [1], "box3d": None, "refine": False},
        {"object": 2, "points3d": [[15.0, 16.0, 4.0], [3.0, 3.0, 1.0]], "labels": [1, 0], "box3d": None, "refine": True}]

    for kind, state in [("undo", after_first), ("undo", before), ("redo", after_first), ("redo", after_second)]:
        stepped = client.post(f"/api/images/{image_id}/{kind}")
        assert stepped.status_code == 200 and stepped.json()["plane"] == "axial"
        np.testing.assert_array_equal(labels, state, err_msg=kind)
    assert len(client.get(f"/api/images/{image_id}/session").json()["prompts"]) == 3

    client.post(f"/api/images/{image_id}/undo")  # the refining click again, from the first click's kept logits
    assert post3d(client, image_id, object=2, points=[[15, 16, 4], [3, 3, 1]], labels=[1, 0]).json()["refined"] is True
    np.testing.assert_array_equal(labels, after_second)
    fresh = post3d(client, image_id, object=2, points=[[20, 20, 5]]).json()  # other clicks: a fresh segmentation
    assert fresh["refined"] is False and store.volume_runs == 1

    boxed = post3d(client, image_id, object=3, box=[8, 8, 2, 24, 24, 6])
    assert boxed.status_code == 200 and boxed.json()["refined"] is False
    assert post3d(client, image_id, object=3, box=[8, 8, 2, 24, 24, 6], points=[[15, 16, 4]]).json()["refined"] is True


@pytest.mark.parametrize("body, words", [
    ({"points": [[15, 16, 9]]}, "lie outside the volume of 32x32x8 (X x Y x Z) voxels"),
    ({"points": [[-1, 16, 4]]}, "lie outside the volume"),
    ({"points": [[15, 16]]}, "give each 3D click as [x, y, z]"),
    ({"points": [[1, 1, 1]] * 101}, "at most 100 3D clicks"),
    ({"points": [[15, 16, 4]], "object": 0}, "object 0: give an object number 1..65535"),
    ({"points": [[15, 16, 4]], "object": 70000}, "object 70000"),
    ({"points": [[15, 16, 4]], "labels": [1, 0]}, "give one label per click (1)"),
    ({"points": [[15, 16, 4]], "labels": [2]}, "1 object, 0 background"),
    ({"box": [8, 8, 24, 24]}, "a 3D box has 6 numbers x0 y0 z0 x1 y1 z1"),
    ({"box": [8, 8, 2, 24, 24, 8]}, "reaches outside the volume"),
    ({}, "give at least one 3D click"),
    ({"points": "here"}, "bad request: body.points"),
])
def test_bad_3d_requests_are_400s_that_say_what_to_do(served, tmp_path, ball, body, words):
    client, store = served
    image_id = open_ball(client, tmp_path, ball)
    answer = post3d(client, image_id, **body)
    assert answer.status_code == 400 and words in answer.json()["error"], answer.json()
    assert store.volume_runs == 0 and not store.get(image_id).prompts  # refused before the volume was encoded


def test_a_picture_an_unknown_image_and_a_server_without_3d_model(served, tiny_predictor, picture, tmp_path, ball):
    client, store = served
    image_id = client.post("/api/images", files=png_upload(picture)).json()["image_id"]
    for path in ("segment3d", "encode3d"):
        answer = client.post(f"/api/images/{image_id}/{path}", json={"points": [[10, 10, 0]]})
        assert answer.status_code == 400 and "is a 2D picture: 3D clicks need a volume" in answer.json()["error"]
    assert post3d(client, "nope", points=[[1, 1, 1]]).status_code == 404
    volume_id = open_ball(client, tmp_path, ball)
    assert client.post(f"/api/images/{volume_id}/encode3d").json() == {"encoded": True, "slices": 8}
    assert client.post(f"/api/images/{volume_id}/encode3d").json() == {"encoded": False, "slices": 8}

    plain, plain_store = make_client(tiny_predictor, root=tmp_path)
    health = plain.get("/api/health").json()
    assert health["volume_clicks"] is False and "--volume-model" in health["volume_note"]
    volume_id = open_ball(plain, tmp_path, ball)
    refused = post3d(plain, volume_id, points=[[15, 16, 4]])
    assert refused.status_code == 409 and "3D clicks are off on this server" in refused.json()["error"]
    assert "--volume-model litemedsam-3d" in refused.json()["error"]
    assert "volume_model" not in plain.get(f"/api/images/{volume_id}/session").json()
    plain_store.close()


def test_the_session_replays_its_3d_clicks(served, model3d, tmp_path, ball, capsys, monkeypatch):
    from medseg.cli import main

    client, store = served
    _, checkpoint = model3d
    image_id = open_ball(client, tmp_path, ball)
    client.post(f"/api/images/{image_id}/segment", json={"box": [8, 8, 24, 24], "slice": 4, "object": 1})
    post3d(client, image_id, object=2, points=[[15, 16, 4]])
    post3d(client, image_id, object=2, points=[[15, 16, 4], [12, 12, 6]], labels=[1, 0])
    client.post(f"/api/images/{image_id}/brush", json={"strokes": [[1, 1]], "slice": 2, "object": 2, "radius": 1})
    session = client.get(f"/api/images/{image_id}/session").json()
    assert session["volume_model"] == "litemedsam-3d-tiny" and session["volume_weights"] == "checkpoint"
    assert [("points3d" in p, p.get("refine")) for p in session["prompts"]] == [
        (False, None), (True, False), (True, True), (False, None)]
    (tmp_path / "session.json").write_text(json.dumps(session), encoding="utf-8")
    served_labels = store.get(image_id).labels.copy()

    assert main(["predict", str(tmp_path / "ball.nii.gz"), "--model", "litemedsam-3d-tiny", "--checkpoint",
                 str(checkpoint), "--prompts", str(tmp_path / "session.json"), "--out", str(tmp_path / "replayed.nii.gz")]) == 0
    np.testing.assert_array_equal(read_label(tmp_path / "replayed.nii.gz").array, served_labels)
    assert "replayed 4 prompt(s)" in capsys.readouterr().out

    # a 2D --model cannot know the served 3D weights: the error names what to do, nothing is written
    assert main(["predict", str(tmp_path / "ball.nii.gz"), "--model", "litemedsam-tiny", "--prompts",
                 str(tmp_path / "session.json"), "--out", str(tmp_path / "other.nii.gz")]) == 2
    assert "replay the session with --model litemedsam-3d-tiny --checkpoint W" in capsys.readouterr().err
    assert not (tmp_path / "other.nii.gz").exists()
    (tmp_path / "random.json").write_text(json.dumps({**session, "volume_weights": "random"}), encoding="utf-8")
    assert main(["predict", str(tmp_path / "ball.nii.gz"), "--model", "litemedsam-tiny", "--prompts",
                 str(tmp_path / "random.json"), "--out", str(tmp_path / "other.nii.gz")]) == 2
    assert "prompt 1 is a 3D click made with 'litemedsam-3d-tiny' and random weights" in capsys.readouterr().err

    # made with shipped 3D weights (here: the fixture's, as if shipped), a 2D --model replays the 3D clicks with them
    import medseg.models

    build = medseg.models.build_model
    monkeypatch.setattr(medseg.models, "build_model", lambda name, **kw: model3d[0] if name == "litemedsam-3d-tiny" and
                        kw.get("pretrained") else build(name, **kw))
    (tmp_path / "shipped.json").write_text(json.dumps({**session, "volume_weights": "shipped"}), encoding="utf-8")
    assert main(["predict", str(tmp_path / "ball.nii.gz"), "--model", "litemedsam-tiny", "--prompts",
                 str(tmp_path / "shipped.json"), "--out", str(tmp_path / "shipped.nii.gz")]) == 0
    assert "the 3D clicks replay with litemedsam-3d-tiny (shipped weights)" in capsys.readouterr().err
    np.testing.assert_array_equal(read_label(tmp_path / "shipped.nii.gz").array == 2, served_labels == 2)

    for prompts, words in [
        ([{"object": 2, "points3d": [[15, 16, 4], [1, 1, 1]], "labels": [1, 0], "box3d": None, "refine": True}],
         "refines object 2's 3D segmentation, but no 3D prompt of object 2 comes before it"),
        ([{"automatic": "blobs"}, {"object": 2, "points3d": [[15, 16, 4]], "labels": [1]}],
         "a promptable 3D model cannot replay: replay it with --model universal")]:
        (tmp_path / "bad.json").write_text(json.dumps({"shape": [8, 32, 32], "prompts": prompts}), encoding="utf-8")
        assert main(["predict", str(tmp_path / "ball.nii.gz"), "--model", "litemedsam-3d-tiny", "--checkpoint",
                     str(checkpoint), "--prompts", str(tmp_path / "bad.json"), "--out", str(tmp_path / "bad.nii.gz")]) == 2
        assert words in capsys.readouterr().err


def test_serve_options_of_3d_clicks(monkeypatch, capsys):
    import argparse

    import medseg.models
    from medseg.cli import main
    from medseg.cli.serve import serve_volume_model

    for args, words in [(["--model", "litemedsam-3d"], "serve it for 3D clicks with --volume-model litemedsam-3d"),
                        (["--volume-model", "unet3d"], "--volume-model 'unet3d': give a promptable 3D model"),
                        (["--volume-model", "none", "--volume-checkpoint", "w.safetensors"], "drop one of them"),
                        (["--volume-checkpoint", "/no/such.safetensors"], "--volume-checkpoint /no/such.safetensors: no such file")]:
        assert main(["serve", *(["--model", "litemedsam-tiny"] if "--model" not in args else []), *args]) == 2
        assert words in capsys.readouterr().err

    def missing(name, **kwargs):
        raise CheckpointError(f"the shipped 3D head of {name!r} is missing from this installation")

    monkeypatch.setattr(medseg.models, "build_model", missing)
    options = dict(volume_checkpoint=None, device=None, engine="torch", precision="fp32", threads=None)
    off = serve_volume_model(argparse.Namespace(volume_model=None, **options))  # the default: off, and why
    assert off.predictor is None and "--volume-model litemedsam-3d --volume-checkpoint W" in off.note
    assert "3D clicks are off" in capsys.readouterr().err
    with pytest.raises(MedsegError, match="litemedsam-3d"):  # asked for by name: its weights must load
        serve_volume_model(argparse.Namespace(volume_model="litemedsam-3d", **options))
    assert "started with --volume-model none" in serve_volume_model(argparse.Namespace(volume_model="none", **options)).note


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium as tests/serve/test_serve_browser.py drives it (skipped without it, unless
    MEDSEG_REQUIRE_BROWSER=1)."""
    import os
    import shutil

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("MEDSEG_REQUIRE_BROWSER") == "1":
            pytest.fail("MEDSEG_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed", pytrace=False)
        pytest.skip("needs chromium and chromium-driver (apt-get)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,800", "--disable-gpu"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


def test_3d_mode_in_the_page(browser, model3d, tmp_path, ball):
    """Open a volume, turn on 3D, click the object on slice 4 (then shift-click the background): the clicks
    arrive as 3D prompts, the second refining the first; undo brings the first click's prompt back."""
    import os
    from pathlib import Path

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    from test_serve_browser import wait_for as wait
    from test_serve_cli import free_port, get, start

    def wait_for(condition, what: str, timeout: float = 30.0):
        return wait(condition, timeout, what)

    artifacts = Path(os.environ.get("MEDSEG_TEST_ARTIFACTS", tmp_path / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "root"
    root.mkdir()
    write_image(ball, root / "ball.nii.gz")
    port = free_port()
    server, _ = start(["--port", str(port), "--root", str(root), "--volume-model", "litemedsam-3d-tiny",
                       "--volume-checkpoint", str(model3d[1])])
    base = f"http://127.0.0.1:{port}"
    try:
        assert get(f"{base}/api/health")[1]["volume_clicks"] is True
        browser.get(base + "/")
        status = browser.find_element(By.ID, "status")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#files option")) == 2, "the --root listing")
        Select(browser.find_element(By.ID, "files")).select_by_value("ball.nii.gz")
        wait_for(lambda: "32x32x8" in status.text, "the volume to open")
        image_id = browser.execute_script("return state.image.image_id")
        wait_for(lambda: not browser.find_element(By.ID, "mode3d").get_attribute("disabled"), "3D clicks to be on")
        browser.find_element(By.ID, "mode3d").click()
        wait_for(lambda: "3D mode" in status.text, "the volume's encoding")
        browser.execute_script("setSlice(4)")
        canvas = browser.find_element(By.ID, "canvas")
        scale = canvas.size["width"] / 32  # CSS pixels per voxel
        ActionChains(browser).move_to_element_with_offset(canvas, 0, 0).click().perform()  # the centre: (16, 16)
        wait_for(lambda: "voxels in 3D" in status.text, "the 3D segmentation")
        prompts = get(f"{base}/api/images/{image_id}/session")[1]["prompts"]
        assert len(prompts) == 1 and prompts[0]["labels"] == [1] and prompts[0]["refine"] is False
        x, y, z = prompts[0]["points3d"][0]
        assert z == 4 and abs(x - 16) <= 1 and abs(y - 16) <= 1
        assert wait_for(lambda: browser.execute_script(
            "return state.labels && state.labels.data.some((v, i) => i % 4 === 0 && v === 1)"), "the label overlay")

        ActionChains(browser).move_to_element_with_offset(canvas, int(-12 * scale), int(-12 * scale)) \
            .key_down(Keys.SHIFT).click().key_up(Keys.SHIFT).perform()
        wait_for(lambda: len(get(f"{base}/api/images/{image_id}/session")[1]["prompts"]) == 2, "the negative click")
        second = get(f"{base}/api/images/{image_id}/session")[1]["prompts"][1]
        assert second["labels"] == [1, 0] and second["refine"] is True and second["points3d"][1][2] == 4
        browser.save_screenshot(str(artifacts / "serve_3d_clicks.png"))

        browser.find_element(By.ID, "undo").click()
        wait_for(lambda: browser.execute_script("return state.clicks3d[1] && state.clicks3d[1].points.length === 1"),
                 "undo to bring back the first click")
        assert len(get(f"{base}/api/images/{image_id}/session")[1]["prompts"]) == 1
    finally:
        server.terminate()
        server.wait(timeout=20)
