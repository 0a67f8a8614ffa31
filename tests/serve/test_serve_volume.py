"""medseg serve on volumes and in automatic mode: three planes, propagation over a slice range (one undo
step), 16-bit object ids for the page, the universal model's tasks, and the replay of all of it."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from medseg.infer.automatic import AutoSegmenter
from medseg.io import read_label, write_image
from medseg.models import build_model
from servekit import make_client, png_upload


@pytest.fixture(scope="module")
def ball() -> np.ndarray:
    """(Z=10, Y=40, X=48) float32: a bright ball of radius 4.5 slices around (z, y, x) = (5, 20, 24)."""
    rng = np.random.default_rng(1)
    zz, yy, xx = np.mgrid[:10, :40, :48]
    volume = rng.normal(40, 8, (10, 40, 48))
    volume[((zz - 5) / 4.5) ** 2 + ((yy - 20) / 12) ** 2 + ((xx - 24) / 12) ** 2 < 1] = 220
    return volume.astype(np.float32)


def open_volume(client, folder, volume, name="ball.nii.gz") -> dict:
    write_image(volume, folder / name, overwrite=True)
    return client.post("/api/images/open", json={"path": name}).json()


def test_planes_show_and_paint_their_own_cuts(client, tmp_path, ball):
    info = open_volume(client, tmp_path, ball)
    assert info["planes"] == ["axial", "coronal", "sagittal"]
    image_id = info["image_id"]
    for plane, size in [("axial", (48, 40)), ("coronal", (48, 10)), ("sagittal", (40, 10))]:
        png = client.get(f"/api/images/{image_id}/slices/3.png?plane={plane}")
        assert PILImage.open(io.BytesIO(png.content)).size == size, plane  # (width, height)
    answer = client.post(f"/api/images/{image_id}/segment", json={"box": [14, 1, 34, 9], "plane": "coronal", "slice": 20})
    assert answer.status_code == 200 and answer.json()["mask"]["shape"] == [10, 48]
    client.post(f"/api/images/{image_id}/brush", json={"strokes": [[5, 5]], "plane": "sagittal", "slice": 2,
                                                        "object": 300, "radius": 1})
    labels = client.get(f"/api/images/{image_id}/labels?format=nifti").content
    (tmp_path / "labels.nii.gz").write_bytes(labels)
    painted = read_label(tmp_path / "labels.nii.gz").array
    assert set(np.unique(np.delete(painted, 20, axis=1))) <= {0, 300}  # the coronal mask only on row y=20
    assert painted[5, 5, 2] == 300 and (painted == 300).sum() == 5  # the sagittal stroke on column x=2
    rgb = np.asarray(PILImage.open(io.BytesIO(client.get(
        f"/api/images/{image_id}/slices/2/labels.png?plane=sagittal&encoding=rgb").content)))
    assert rgb.shape == (10, 40, 3) and tuple(rgb[5, 5]) == (300 % 256, 300 // 256, 0)  # ids past 255 for the page
    named = client.post(f"/api/images/{image_id}/objects", json={"object": 300, "name": " left atrium "}).json()
    assert named == {"objects": {"1": "object 1", "300": "left atrium"}}
    for bad in ({"object": 300, "name": ""}, {"object": 300, "name": "a\nb"}, {"object": 0, "name": "x"}):
        assert client.post(f"/api/images/{image_id}/objects", json=bad).status_code == 400, bad
    assert client.post(f"/api/images/{image_id}/undo").json() == {"slice": 2, "plane": "sagittal"}
    for bad, words in [({"box": [1, 1, 5, 5], "plane": "oblique"}, "give one of axial, coronal, sagittal"),
                       ({"box": [1, 1, 5, 5], "plane": "coronal", "slice": 40}, "outside the image's 40 coronal")]:
        answer = client.post(f"/api/images/{image_id}/segment", json=bad)
        assert answer.status_code == 400 and words in answer.json()["error"]
    assert "encoding 'hsv'" in client.get(f"/api/images/{image_id}/slices/0/labels.png?encoding=hsv").json()["error"]


def test_propagation_is_one_undo_step_and_replays(client, tmp_path, ball, capsys):
    from medseg.cli import main

    image_id = open_volume(client, tmp_path, ball)["image_id"]
    refused = client.post(f"/api/images/{image_id}/propagate", json={"slice": 5, "first": 0, "last": 9})
    assert refused.status_code == 400 and "no pixels on slice 5" in refused.json()["error"]
    client.post(f"/api/images/{image_id}/segment", json={"box": [12, 8, 36, 32], "slice": 5})
    for bad in ({"slice": 5, "first": 6, "last": 9}, {"slice": 5, "first": 0, "last": 10}):
        assert client.post(f"/api/images/{image_id}/propagate", json=bad).status_code == 400
    before = client.get(f"/api/images/{image_id}/labels?format=nifti").content
    answer = client.post(f"/api/images/{image_id}/propagate", json={"slice": 5, "first": 2, "last": 8}).json()
    assert set(answer["slices"]) <= {2, 3, 4, 6, 7, 8} and answer["slices"], answer  # the walk, within the range
    (tmp_path / "served.nii.gz").write_bytes(client.get(f"/api/images/{image_id}/labels?format=nifti").content)
    served = read_label(tmp_path / "served.nii.gz").array
    assert served[answer["slices"]].any(axis=(1, 2)).all() and not served[[0, 1, 9]].any()
    session = client.get(f"/api/images/{image_id}/session").json()
    assert session["prompts"][-1] == {"slice": 5, "object": 1, "propagate": [2, 8]}
    (tmp_path / "session.json").write_text(client.get(f"/api/images/{image_id}/session").text, encoding="utf-8")
    assert client.post(f"/api/images/{image_id}/undo").json() == {"slice": 2, "plane": "axial"}  # all slices at once
    assert client.get(f"/api/images/{image_id}/labels?format=nifti").content == before
    client.post(f"/api/images/{image_id}/redo")
    torch.manual_seed(0)  # the tiny model's random weights: the same as the server's
    assert main(["predict", str(tmp_path / "ball.nii.gz"), "--model", "litemedsam-tiny", "--prompts",
                 str(tmp_path / "session.json"), "--out", str(tmp_path / "replayed.nii.gz")]) == 0
    np.testing.assert_array_equal(read_label(tmp_path / "replayed.nii.gz").array, served)
    capsys.readouterr()


@pytest.fixture(scope="module")
def universal(tmp_path_factory):
    """A tiny universal model knowing one task "blobs" (2 classes), saved as a checkpoint too."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_model("universal-tiny")
    model.automatic.add_task("blobs", "photo", {1: "blob", 2: "halo"})
    path = tmp_path_factory.mktemp("universal") / "blobs.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return AutoSegmenter(model.eval(), device="cpu"), path


def test_automatic_mode_paints_every_class_then_clicks_refine(universal, tiny_predictor, tmp_path, picture, capsys):
    from medseg.cli import main

    predictor, checkpoint = universal
    client, store = make_client(predictor, root=tmp_path)
    assert client.get("/api/health").json()["automatic"] is True
    assert client.get("/api/tasks").json() == {"tasks": [{"name": "blobs", "modality": "photo",
                                                          "classes": {"1": "blob", "2": "halo"}}]}
    write_image(picture, tmp_path / "scan.png")
    image_id = client.post("/api/images/open", json={"path": "scan.png"}).json()["image_id"]
    answer = client.post(f"/api/images/{image_id}/automatic", json={"task": "blobs"}).json()
    assert [(o["object"], o["name"]) for o in answer["objects"]] == [(1, "blob"), (2, "halo")]
    assert client.get(f"/api/images/{image_id}").json()["objects"] == {"1": "blob", "2": "halo"}
    painted = next(o for o in answer["objects"] if o["pixels"])  # refine a painted class: its box plus a click
    client.post(f"/api/images/{image_id}/segment", json={"box": painted["box"], "points": [[40, 30]],
                                                          "object": painted["object"]})
    unknown = client.post(f"/api/images/{image_id}/automatic", json={"task": "lungs"})
    assert unknown.status_code == 400 and "knows blobs" in unknown.json()["error"]
    (tmp_path / "session.json").write_text(client.get(f"/api/images/{image_id}/session").text, encoding="utf-8")
    (tmp_path / "served.png").write_bytes(client.get(f"/api/images/{image_id}/labels?format=png").content)
    store.close()
    assert main(["predict", str(tmp_path / "scan.png"), "--model", "universal-tiny", "--checkpoint", str(checkpoint),
                 "--prompts", str(tmp_path / "session.json"), "--out", str(tmp_path / "replayed.png")]) == 0
    np.testing.assert_array_equal(read_label(tmp_path / "replayed.png").array, read_label(tmp_path / "served.png").array)
    assert main(["predict", str(tmp_path / "scan.png"), "--model", "litemedsam-tiny", "--prompts",
                 str(tmp_path / "session.json")]) == 2  # an automatic prompt needs a universal model
    assert "replay it with a universal model" in capsys.readouterr().err

    plain, plain_store = make_client(tiny_predictor)  # a promptable-only server says so
    image_id = plain.post("/api/images", files=png_upload(picture)).json()["image_id"]
    assert plain.get("/api/health").json()["automatic"] is False and plain.get("/api/tasks").json() == {"tasks": []}
    refused = plain.post(f"/api/images/{image_id}/automatic", json={"task": "blobs"})
    assert refused.status_code == 400 and "no automatic mode" in refused.json()["error"]
    plain_store.close()


def test_automatic_mode_on_an_onnx_engine_paints_what_torch_paints(universal, tmp_path, picture, monkeypatch):
    """`medseg serve --engine onnxruntime` keeps *Segment all*: the encoder runs on the engine, the head in torch."""
    pytest.importorskip("onnxruntime")
    from medseg.engines import runtime

    monkeypatch.setattr(runtime, "EXPORT_CACHE", tmp_path / "exports")
    torch_predictor, _ = universal
    onnx_predictor = AutoSegmenter(torch_predictor.universal, device="cpu", engine="onnxruntime", threads=1)
    write_image(picture, tmp_path / "scan.png")
    labels = []
    for predictor in (torch_predictor, onnx_predictor):
        client, store = make_client(predictor, root=tmp_path)
        assert client.get("/api/health").json()["automatic"] is True
        image_id = client.post("/api/images/open", json={"path": "scan.png"}).json()["image_id"]
        assert client.post(f"/api/images/{image_id}/automatic", json={"task": "blobs"}).status_code == 200
        labels.append(np.asarray(PILImage.open(io.BytesIO(client.get(f"/api/images/{image_id}/labels?format=png").content))))
        store.close()
    assert labels[0].any() and (labels[0] == labels[1]).mean() > 0.99
