"""The "volume_prompts" objective and what uses its model, on tiny NIfTI volumes of balls written here:
the 3D head learns clicks from cached slice embeddings through train(); `medseg predict --point X Y Z`
writes the mask on the input's grid; `medseg evaluate --prompt clicks` scores rounds of 3D clicks with
the 3D model and, under the same protocol, with a 2D model slice by slice; bad prompts are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import pytest
import yaml
from trainkit import write_balls

from medseg.cli import main
from medseg.errors import InputError
from medseg.infer.volume_prompts import SliceWisePredictor, VolumePredictor
from medseg.io import read_image, read_label
from medseg.models import build_model
from medseg.train import load_config, train


@pytest.fixture(scope="module")
def balls(tmp_path_factory) -> Path:
    root = write_balls(tmp_path_factory.mktemp("balls3d") / "balls", n=8)
    (root.parent / "tasks.yaml").write_text(yaml.safe_dump({"balls": {"root": "balls", "modality": "MR"}}))
    return root


def config(balls: Path, cache: Path, **extra):
    values = {"data.tasks": str(balls.parent / "tasks.yaml"), "data.patches_per_epoch": 40,
              "model.name": "litemedsam-3d-tiny", "model.pretrained": False, "model.trainable": "volume_head",
              "optim.lr": 5e-3, "optim.warmup_steps": 2, "train.epochs": 6, "train.batch_size": 1,
              "train.objective": "volume_prompts", "train.first_prompt": "mixed", "train.click_rounds": 2,
              "train.device": "cpu", "train.amp": "off", "train.progress": False, "train.cache_dir": str(cache),
              "train.seed": 0}
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return load_config(None, [f"{k}={v}" for k, v in values.items()])


@pytest.fixture(scope="module")
def trained(balls, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("prompt3d_run")
    result = train(config(balls, run / "cache"), run / "run")
    history = [h for h in result["history"] if h["epoch"] > 0]
    start = result["history"][0]["val_dice"]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result["best_dice"] > start + 0.1, (start, result["best_dice"])  # it learns to follow clicks
    assert len(list((run / "cache" / "volume-slices").glob("*.safetensors"))) == 7  # train + val, once each
    return run / "run" / "best.safetensors"


def test_the_head_learns_from_cached_slice_embeddings(trained):
    assert trained.is_file()


def test_predict_with_a_click_in_a_volume_writes_the_mask_on_the_input_grid(balls, trained, tmp_path, capsys):
    source = balls / "imagesTr" / "b7.nii.gz"
    gt = read_label(balls / "labelsTr" / "b7.nii.gz").array > 0
    z, y, x = (int(v) for v in np.argwhere(gt).mean(axis=0).round())
    out = tmp_path / "ball.nii.gz"
    code = main(["predict", str(source), "--model", "litemedsam-3d-tiny", "--checkpoint", str(trained),
                 "--point", str(x), str(y), str(z), "--out", str(out), "--overlay", str(tmp_path / "o.png")])
    assert code == 0, capsys.readouterr().err
    mask = read_label(out)
    assert mask.array.shape == gt.shape and np.allclose(mask.meta.affine, read_image(source).meta.affine)
    predicted = mask.array > 0
    assert predicted[z, y, x] and (predicted & gt).sum() > 0.8 * predicted.sum()  # on the ball, around the click
    assert (tmp_path / "o.png").is_file()


@pytest.mark.parametrize("argv,message", [
    (["--point", "3", "4"], "3 numbers X Y Z"),
    (["--point", "300", "4", "5"], "outside the volume"),
    (["--box", "1", "2", "3", "4"], "one 3D box"),
    ([], "give a prompt"),
])
def test_bad_3d_prompts_are_clear_errors(balls, trained, tmp_path, capsys, argv, message):
    code = main(["predict", str(balls / "imagesTr" / "b7.nii.gz"), "--model", "litemedsam-3d-tiny", "--checkpoint",
                 str(trained), "--out", str(tmp_path / "m.nii.gz"), *argv])
    assert code != 0 and message in capsys.readouterr().err
    assert not (tmp_path / "m.nii.gz").exists()


def test_a_2d_model_on_a_volume_points_to_the_3d_model_for_clicks(balls, tmp_path, capsys):
    code = main(["predict", str(balls / "imagesTr" / "b7.nii.gz"), "--model", "litemedsam-tiny", "--point", "5", "5",
                 "5", "--out", str(tmp_path / "m.nii.gz")])
    assert code != 0 and "litemedsam-3d" in capsys.readouterr().err


def test_evaluate_clicks_scores_rounds_in_3d_for_both_paths(balls, trained, tmp_path, capsys):
    for model, extra in (("litemedsam-3d-tiny", ["--checkpoint", str(trained)]), ("litemedsam-tiny", [])):
        out = tmp_path / f"{model}.json"
        code = main(["evaluate", str(balls), "--split", "test", "--model", model, *extra, "--prompt", "clicks",
                     "--rounds", "3", "--json", str(out), "--no-progress"])
        text = capsys.readouterr().out
        assert code == 0 and "area under the rounds curve" in text
        result = json.loads(out.read_text())
        assert result["errors"] == [] and len(result["cases"]) == 2  # one volume, two classes
        assert len(result["dice_per_round"]) == 3 and 0 <= result["auc"] <= 1 and 0 <= result["nsd"] <= 1
    code = main(["evaluate", str(balls), "--model", "litemedsam-3d-tiny", "--checkpoint", str(trained)])
    assert code != 0 and "--prompt clicks" in capsys.readouterr().err


def test_evaluate_modality_picks_the_window_of_volumes_that_carry_none(balls, trained, monkeypatch, capsys):
    import medseg.infer.volume_prompts as volume_prompts

    windows = []
    window = volume_prompts.window_volume
    monkeypatch.setattr(volume_prompts, "window_volume", lambda v, w: windows.append(w) or window(v, w))
    for extra, expected in (([], "MR"), (["--modality", "CT"], "CT")):  # NIfTI says nothing: MR's window
        windows.clear()
        code = main(["evaluate", str(balls), "--split", "test", "--model", "litemedsam-3d-tiny", "--checkpoint",
                     str(trained), "--prompt", "clicks", "--rounds", "1", "--limit", "1", "--no-progress", *extra])
        assert code == 0, capsys.readouterr().err
        assert windows and set(windows) == {expected}


def test_the_volume_predictor_rejects_bad_input(trained):
    predictor = VolumePredictor(build_model("litemedsam-3d-tiny", checkpoint=trained))
    with pytest.raises(RuntimeError, match="set_volume"):
        predictor.predict(points=[[1, 1, 1]])
    with pytest.raises(InputError, match="NaN"):
        predictor.set_volume(np.full((4, 8, 8), np.nan))
    with pytest.raises(InputError, match="spacing"):
        predictor.set_volume(np.zeros((4, 8, 8)), spacing_zyx=(0, 1, 1))
    predictor.set_volume(np.random.default_rng(0).random((6, 10, 12)), (2.0, 1.0, 1.0))
    out = predictor.predict(points=[[3, 4, 2]], point_labels=[1])
    assert out.mask.shape == (6, 10, 12) and out.mask.dtype == bool
    predictor.predict(points=[[3, 4, 2], [1, 1, 1]], point_labels=[1, 0], mask_input=out.logits)
    for kwargs, message in (({}, "at least one click"), ({"points": [[3, 4, 2]], "point_labels": [2]}, "1 \\(object\\)"),
                            ({"points": [[3, 4, 2]], "mask_input": np.zeros((6, 4, 4))}, "mask_input"),
                            ({"box": [5, 5, 5, 1, 1, 1]}, "inverted")):
        with pytest.raises(InputError, match=message):
            predictor.predict(**kwargs)
    with pytest.raises(InputError, match="promptable 3D model"):
        VolumePredictor(build_model("litemedsam-tiny"))


def test_the_slice_wise_path_walks_from_a_click_and_keeps_to_a_box():
    predictor = SliceWisePredictor(__import__("medseg.infer", fromlist=["Predictor"]).Predictor(
        build_model("litemedsam-tiny")))
    volume = np.zeros((6, 16, 16), dtype=np.float32)
    volume[:, 4:12, 4:12] = 100
    predictor.set_volume(volume)
    out = predictor.predict(box=[3, 3, 2, 12, 12, 3])
    assert not out.mask[:2].any() and not out.mask[4:].any()  # nothing outside the box's slices
    with pytest.raises(InputError, match="positive click or a 3D box"):
        predictor.predict(points=[[5, 5, 1]], point_labels=[0])


def test_crops_draw_each_task_evenly_whatever_its_number_of_objects(monkeypatch):
    import medseg.train.prompt3d as prompt3d

    objects = [prompt3d.VolumeObject(f"h{i}:1", "many", None, None, None, None) for i in range(30)]
    objects += [prompt3d.VolumeObject("la:1", "few", None, None, None, None)]
    monkeypatch.setattr(prompt3d, "object_item", lambda obj, rng, first: {"task": obj.task})
    crops = prompt3d.PromptedVolumes(objects, 400, seed=0, first="point")
    share = np.mean([crops[i]["task"] == "few" for i in range(len(crops))])
    assert 0.4 < share < 0.6, share  # drawn by object it would be 1 in 31


def test_crops_of_thin_slices_see_the_interpolated_slices_inference_makes():
    from medseg.infer.volume_prompts import encoded_slices, interpolate_slices
    from medseg.train.prompt3d import _as_encoded

    whole = torch.randn(9, 4, 3, 3)
    kept = encoded_slices(9, 2)
    assert torch.equal(_as_encoded(whole, 0, 9, 2), interpolate_slices(whole[kept], kept, 9))  # the whole grid
    crop = _as_encoded(whole[3:8], 3, 9, 2)  # slices 3..7: 4 and 6 encoded, 3 and 7 the crop's own ends
    assert torch.equal(crop[[0, 1, 3, 4]], whole[[3, 4, 6, 7]])
    assert torch.allclose(crop[2], (whole[4] + whole[6]) / 2)


def test_a_box_bounds_its_object_and_grows_to_hold_a_positive_click_outside_it(monkeypatch):
    """Whatever the head says outside a 3D box is background, in the mask and in the logits handed back;
    a positive click beyond the box widens the bound to it."""
    from medseg.infer.volume_prompts import PADDING_LOGIT

    predictor = VolumePredictor(build_model("litemedsam-3d-tiny"))
    predictor.set_volume(np.random.default_rng(0).random((6, 20, 16)), (2.0, 1.0, 1.0))
    monkeypatch.setattr(predictor.head, "decode", lambda features, maps, image, *rest: torch.full_like(image, 5.0))
    out = predictor.predict(box=[3, 4, 1, 9, 12, 3])  # x0, y0, z0, x1, y1, z1
    expected = np.zeros((6, 20, 16), bool)
    expected[1:4, 4:13, 3:10] = True
    assert np.array_equal(out.mask, expected)
    assert (out.logits[0] == PADDING_LOGIT).all() and (out.logits[4:] == PADDING_LOGIT).all()
    assert (out.logits[1:4] > 0).any()
    wider = predictor.predict(box=[3, 4, 1, 9, 12, 3], points=[[14, 12, 5]], point_labels=[1]).mask
    assert wider[5, 12, 14] and wider[1:6, 4:13, 3:15].all() and not wider[0].any()
    assert predictor.predict(points=[[14, 12, 5]], point_labels=[1]).mask.all()  # no box: no bound
