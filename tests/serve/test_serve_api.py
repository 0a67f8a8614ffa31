"""The JSON API of ``medseg serve``: every endpoint, and a clear JSON error for every bad request."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest
from PIL import Image

from servekit import make_client, png_upload
from medseg.io import read_image, read_label, write_image


def decode_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def test_health_and_page(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["model"] == "litemedsam-tiny" and health["engine"] == "torch"
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/..%2Fapp.py").status_code == 404


def test_upload_segment_undo_export(client, picture, tiny_predictor):
    info = client.post("/api/images", files=png_upload(picture)).json()
    assert info["shape"] == [1, 60, 90] and info["name"] == "picture.png"
    image_id = info["image_id"]
    shown = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/slices/0.png").content)))
    assert shown.shape == (60, 90)

    answer = client.post(f"/api/images/{image_id}/segment",
                         json={"box": [20, 10, 60, 50], "points": [], "labels": [], "object": 1}).json()
    mask = decode_png(answer["mask"]["png_base64"]) > 0
    assert mask.shape == (60, 90) and answer["pixels"] == mask.sum() > 0
    tiny_predictor.set_image(picture)
    direct = tiny_predictor.predict(box=np.array([20, 10, 60, 50]))
    np.testing.assert_array_equal(mask, direct.masks[0, 0])  # the page gets the Predictor's own mask
    assert answer["score"] == pytest.approx(float(direct.scores[0, 0]), abs=1e-4)
    labels = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/slices/0/labels.png").content)))
    np.testing.assert_array_equal(labels == 1, mask)

    click = client.post(f"/api/images/{image_id}/segment",
                        json={"points": [[80, 5]], "labels": [1], "object": 2}).json()
    assert click["object"] == 2
    best = tiny_predictor.predict(points=np.array([[80, 5]]), multimask=True)  # one click: best of three
    labels_now = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/slices/0/labels.png").content)))
    np.testing.assert_array_equal(labels_now == 2, best.masks[0, int(np.argmax(best.scores[0]))])
    after = client.get(f"/api/images/{image_id}/session").json()
    assert [p["object"] for p in after["prompts"]] == [1, 2] and after["objects"] == {"1": "object 1", "2": "object 2"}

    assert client.post(f"/api/images/{image_id}/undo").json() == {"slice": 0, "plane": "axial"}
    undone = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/slices/0/labels.png").content)))
    np.testing.assert_array_equal(undone, labels)
    assert len(client.get(f"/api/images/{image_id}/session").json()["prompts"]) == 1
    client.post(f"/api/images/{image_id}/redo")
    assert client.post(f"/api/images/{image_id}/redo").json()["error"] == "nothing to redo"

    png = client.get(f"/api/images/{image_id}/labels?format=png")
    assert png.headers["content-disposition"] == 'attachment; filename="picture_labels.png"'
    assert set(np.unique(np.asarray(Image.open(io.BytesIO(png.content))))) <= {0, 1, 2}
    refused = client.get(f"/api/images/{image_id}/labels?format=dicom-seg")
    assert refused.status_code == 400 and "DICOM-SEG references a DICOM input" in refused.json()["error"]
    assert client.delete(f"/api/images/{image_id}").json() == {"closed": image_id}
    assert client.get(f"/api/images/{image_id}").status_code == 404


def test_volume_from_root_keeps_geometry(client, tmp_path):
    volume = np.random.default_rng(1).normal(0, 100, (5, 40, 48)).astype(np.float32)
    affine = np.array([[0, 0, 2.5, 10], [0, -0.8, 0, 20], [-0.7, 0, 0, -5], [0, 0, 0, 1.0]])
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), affine), str(tmp_path / "ct.nii.gz"))
    assert client.get("/api/files").json()["files"] == [{"path": "ct.nii.gz", "bytes": (tmp_path / "ct.nii.gz").stat().st_size}]
    info = client.post("/api/images/open", json={"path": "ct.nii.gz"}).json()
    assert info["shape"] == [5, 40, 48] and "lung" in info["windows"]
    image_id = info["image_id"]
    for window in ("auto", "soft", "bone"):
        assert client.get(f"/api/images/{image_id}/slices/4.png?window={window}").status_code == 200
    assert client.get(f"/api/images/{image_id}/slices/5.png").json()["error"].startswith("slice 5 is outside")
    client.post(f"/api/images/{image_id}/segment", json={"box": [5, 5, 30, 30], "slice": 3})
    out = tmp_path / "labels.nii.gz"
    out.write_bytes(client.get(f"/api/images/{image_id}/labels?format=nifti").content)
    label, source = read_label(out), read_image(tmp_path / "ct.nii.gz")
    assert label.array.shape == (5, 40, 48) and label.array[3].any() and not label.array[2].any()
    np.testing.assert_allclose(label.meta.affine, source.meta.affine, atol=1e-6)


def test_cache_is_bounded_and_reused(tiny_predictor, picture):
    client, store = make_client(tiny_predictor, cache_size=2)
    ids = [client.post("/api/images", files=png_upload(np.roll(picture, k, 1))).json()["image_id"] for k in range(3)]
    for image_id in ids:
        client.post(f"/api/images/{image_id}/segment", json={"box": [20, 10, 60, 50]})
    assert store.encoder_runs == 3 and len(store.encodings) == 2
    client.post(f"/api/images/{ids[-1]}/segment", json={"points": [[40, 30]]})
    assert store.encoder_runs == 3, "a prompt on a cached slice runs only the decoder"
    client.post(f"/api/images/{ids[0]}/segment", json={"points": [[40, 30]]})
    assert store.encoder_runs == 4 and len(store.encodings) == 2
    store.close()


@pytest.mark.parametrize("body, words", [
    ({"box": [60, 10, 20, 50]}, "inverted"),
    ({"box": [1, 2, 3]}, "box: give [x0, y0, x1, y1]"),
    ({"points": [[500, 5]]}, "outside the image"),
    ({"points": [[5, 5]], "labels": [1, 0]}, "one label per point"),
    ({"points": [[5, 5]], "labels": [3]}, "must be 1 (positive) or 0"),
    ({}, "give a box"),
    ({"box": [1, 1, 5, 5], "slice": 2}, "slice 2 is outside"),
    ({"box": [1, 1, 5, 5], "object": 0}, "object 0"),
    ({"box": "nonsense"}, "bad request: body.box"),
    ({"points": [[1, 2, 3], [4, 5, 6]]}, "each point as [x, y]"),
])
def test_bad_prompts_are_clear_400s(client, picture, body, words):
    image_id = client.post("/api/images", files=png_upload(picture)).json()["image_id"]
    answer = client.post(f"/api/images/{image_id}/segment", json=body)
    assert answer.status_code == 400 and words in answer.json()["error"]


def test_bad_uploads(client, picture):
    corrupt = client.post("/api/images", files={"file": ("scan.png", b"\x89PNG\r\n\x1a\n broken", "image/png")})
    assert corrupt.status_code == 400 and "scan.png" in corrupt.json()["error"]
    assert "medseg-serve-" not in corrupt.json()["error"], "errors name the user's file, not the server's copy"
    odd = client.post("/api/images", files={"file": ("notes.exe", b"MZ", "application/octet-stream")})
    assert odd.status_code == 400 and "unsupported upload type" in odd.json()["error"]
    empty = client.post("/api/images", files={"file": ("e.png", b"", "image/png")})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    huge = client.post("/api/images", files={"file": ("big.png", b"0" * 2_100_000, "image/png")})
    assert huge.status_code == 413 and "--max-upload-mb" in huge.json()["error"]
    assert client.post("/api/images", data={"x": "1"}).json()["error"].startswith("send the image as")
    bomb = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", b"\0" * 60_000_000)
    answer = client.post("/api/images", files={"file": ("series.zip", bomb.getvalue(), "application/zip")})
    assert answer.status_code == 400 and "unpacks to 60 MB" in answer.json()["error"]
    assert client.get("/api/images/nope/session").status_code == 404
    assert client.get("/api/images/nope/labels?format=nifti").json()["error"].startswith("no open image")


def test_paths_stay_under_root(client, tmp_path, picture):
    write_image(picture, tmp_path / "inside.png")
    outside = tmp_path.parent / f"{tmp_path.name}_outside.png"
    write_image(picture, outside, overwrite=True)
    os.symlink(outside, tmp_path / "link.png")
    assert [f["path"] for f in client.get("/api/files").json()["files"]] == ["inside.png"]
    assert client.post("/api/images/open", json={"path": "inside.png"}).status_code == 200
    for path, words in [("../" + outside.name, "without '..'"), (str(outside), "relative to the served folder"),
                        ("link.png", "symbolic links"), ("missing.png", "no such file")]:
        answer = client.post("/api/images/open", json={"path": path})
        assert answer.status_code == 400 and words in answer.json()["error"], path
    outside.unlink()


def test_token_is_required_when_set(tiny_predictor):
    client, store = make_client(tiny_predictor, token="s3cret")
    assert client.get("/api/health").status_code == 401
    assert client.get("/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/health", headers={"Authorization": "Bearer s3cret"}).json()["status"] == "ok"
    assert client.get("/api/health?token=s3cret").status_code == 200
    assert client.get("/api/files?token=s3cret").json() == {"files": [], "root": False}
    assert client.post("/api/images/open?token=s3cret", json={"path": "x.png"}).json()["error"].startswith("this server has no --root")
    store.close()


def test_session_replays_to_the_same_labels(client, tmp_path, picture, capsys):
    from medseg.cli import main

    write_image(picture, tmp_path / "scan.png")
    image_id = client.post("/api/images/open", json={"path": "scan.png"}).json()["image_id"]
    for body in ({"box": [20, 10, 60, 50]}, {"points": [[70, 40]], "object": 2},
                 {"points": [[70, 40], [75, 45]], "labels": [1, 0], "object": 2}, {"box": [5, 5, 30, 30], "object": 3}):
        client.post(f"/api/images/{image_id}/segment", json=body)
        if "box" in body and body.get("object") is None:  # a brush stroke and an erasure between prompts
            client.post(f"/api/images/{image_id}/brush", json={"strokes": [[80, 50], [85, 55]], "object": 1})
            client.post(f"/api/images/{image_id}/brush", json={"strokes": [[30, 30]], "erase": True, "radius": 5})
    client.post(f"/api/images/{image_id}/undo")  # the last prompt is undone: the session drops it too
    (tmp_path / "session.json").write_text(client.get(f"/api/images/{image_id}/session").text, encoding="utf-8")
    (tmp_path / "served.png").write_bytes(client.get(f"/api/images/{image_id}/labels?format=png").content)
    import torch

    torch.manual_seed(0)  # the tiny model's random weights: the same as the server's (built the same way)
    assert main(["predict", str(tmp_path / "scan.png"), "--model", "litemedsam-tiny", "--prompts",
                 str(tmp_path / "session.json"), "--out", str(tmp_path / "replayed.png")]) == 0
    assert "replayed 5 prompt(s): 2 object(s)" in capsys.readouterr().out
    np.testing.assert_array_equal(read_label(tmp_path / "replayed.png").array, read_label(tmp_path / "served.png").array)
    (tmp_path / "bad.json").write_text('{"prompts": [{"object": 1}]}')
    assert main(["predict", str(tmp_path / "scan.png"), "--model", "litemedsam-tiny", "--prompts",
                 str(tmp_path / "bad.json")]) == 2
    assert "prompt 0 needs an integer 'object' and a 'box', 'points', brush 'strokes'" in capsys.readouterr().err


def test_brush_and_eraser(client, picture):
    image_id = client.post("/api/images", files=png_upload(picture)).json()["image_id"]
    painted = client.post(f"/api/images/{image_id}/brush", json={"strokes": [[10, 10], [30, 10]], "radius": 2, "object": 3}).json()
    labels = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/slices/0/labels.png").content)))
    expected = np.zeros((60, 90), bool)
    expected[8:13, 8:33] = True  # a 2-pixel brush along y = 10 from x = 10 to 30: rounded ends
    for y, x in [(8, 8), (8, 9), (9, 8), (11, 8), (12, 8), (12, 9), (8, 31), (8, 32), (9, 32), (11, 32), (12, 32), (12, 31)]:
        expected[y, x] = False
    np.testing.assert_array_equal(labels == 3, expected)
    assert painted["pixels"] == expected.sum()
    client.post(f"/api/images/{image_id}/brush", json={"strokes": [[20, 10]], "radius": 1, "object": 3, "erase": True})
    erased = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/slices/0/labels.png").content)))
    assert (erased == 3).sum() == expected.sum() - 5 and erased[10, 20] == 0
    client.post(f"/api/images/{image_id}/undo")
    assert (np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/slices/0/labels.png").content))) == 3).sum() == expected.sum()
    for body, words in [({"strokes": [[100, 5]]}, "must lie in the image"), ({"strokes": []}, "give 1..10000 points"),
                        ({"strokes": [[5, 5]], "radius": 0}, "radius 0")]:
        answer = client.post(f"/api/images/{image_id}/brush", json=body)
        assert answer.status_code == 400 and words in answer.json()["error"]


def test_a_cached_click_does_not_wait_for_an_encoding(tiny_predictor, picture):
    import threading

    client, store = make_client(tiny_predictor)
    image_id = client.post("/api/images", files=png_upload(picture)).json()["image_id"]
    client.post(f"/api/images/{image_id}/segment", json={"box": [20, 10, 60, 50]})  # encodes slice 0
    answers = []
    with store.encode_lock:  # as while another client's image is being encoded
        worker = threading.Thread(target=lambda: answers.append(
            client.post(f"/api/images/{image_id}/segment", json={"points": [[40, 30]]})))
        worker.start()
        worker.join(timeout=60)
        assert answers and answers[0].status_code == 200, "the click on a cached slice waited for the encoder"
    store.close()
