"""The "volume" objective (a planned 3D U-Net, no prompt) on tiny NIfTI volumes written here: it plans,
trains through train(), keeps the plan in its checkpoint, and `medseg predict --model unet3d-tiny`
segments a volume onto the input's grid; patches are drawn reproducibly."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.errors import InputError
from medseg.io import read_image, read_label
from medseg.models import build_model
from medseg.train import load_config, train
from trainkit import write_balls


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    return write_balls(tmp_path_factory.mktemp("balls"))


def config(root: Path, **extra):
    values = {"data.root": str(root), "data.patches_per_epoch": 16, "data.patch_voxels": 16 ** 3 * 2,
              "model.name": "unet3d-tiny", "model.pretrained": False, "model.trainable": "all", "optim.lr": 5e-3,
              "optim.warmup_steps": 1, "train.epochs": 3, "train.batch_size": 4, "train.device": "cpu",
              "train.amp": "off", "train.progress": False, "train.objective": "volume"}
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return load_config(None, [f"{k}={v}" for k, v in values.items()])


def test_volume_objective_plans_trains_and_its_checkpoint_carries_the_plan(balls, tmp_path, capsys):
    result = train(config(balls), tmp_path / "run")
    losses = [h["train_loss"] for h in result["history"] if h["epoch"] > 0]
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(0 <= h["val_dice"] <= 1 for h in result["history"])
    model = build_model("unet3d-tiny", checkpoint=tmp_path / "run" / "best.safetensors")
    plan = model.plan
    assert plan.classes == [1, 2] and model.out_channels == 3 and plan.target_spacing == (1.5, 1.0, 1.0)
    assert all(p % 16 == 0 for p in plan.patch_size)

    case = balls / "imagesTr" / "b7.nii.gz"
    out = tmp_path / "b7_labels.nii.gz"
    assert main(["predict", str(case), "--model", "unet3d-tiny", "--checkpoint",
                 str(tmp_path / "run" / "best.safetensors"), "--out", str(out), "--mirror"]) == 0
    assert "class 1:" in capsys.readouterr().out
    labels, image = read_label(out), read_image(case)
    assert labels.array.shape == image.spatial_shape and set(np.unique(labels.array)) <= {0, 1, 2}
    np.testing.assert_allclose(labels.meta.affine, image.meta.affine)
    assert main(["predict", str(case), "--model", "unet3d-tiny", "--checkpoint",
                 str(tmp_path / "run" / "best.safetensors"), "--out", str(out)]) == 2  # never overwritten
    assert main(["predict", str(case), "--model", "unet3d-tiny", "--box", "1", "1", "5", "5", "--checkpoint",
                 str(tmp_path / "run" / "best.safetensors"), "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert "no prompt" in capsys.readouterr().err

    # no prompt over a whole split: Dice, HD95 and NSD in mm per class of the plan, JSON beside
    report, rows, figure = tmp_path / "auto.json", tmp_path / "auto.csv", tmp_path / "auto.png"
    assert main(["evaluate", str(balls), "--auto", "--model", "unet3d-tiny", "--checkpoint",
                 str(tmp_path / "run" / "best.safetensors"), "--no-progress", "--json", str(report),
                 "--csv", str(rows), "--figure", str(figure)]) == 0
    printed = capsys.readouterr().out
    assert "1 shell" in printed and "2 core" in printed and "s per volume" in printed
    scored = json.loads(report.read_text())
    assert {r["class_id"] for r in scored["cases"]} == {1, 2} and scored["seconds_per_case"] > 0
    table = list(csv.DictReader(rows.open()))  # one row per case and class, as the JSON
    assert len(table) == len(scored["cases"]) and {r["class_name"] for r in table} == {"shell", "core"}
    assert [round(float(r["dice"]), 4) for r in table] == [round(r["dice"], 4) for r in scored["cases"]]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["evaluate", str(balls), "--auto", "--model", "unet3d-tiny", "--no-progress"]) == 2  # no weights
    assert "no shipped weights" in capsys.readouterr().err
    assert main(["evaluate", str(balls), "--model", "unet3d-tiny", "--checkpoint",
                 str(tmp_path / "run" / "best.safetensors")]) == 2
    assert "add --auto" in capsys.readouterr().err


def test_patches_are_reproducible_and_oversample_the_foreground(balls):
    from medseg.data.datasets import dataset_cases
    from medseg.data.planning import fingerprint, make_plan
    from medseg.train.volume import Patches, planned_volumes

    cases = dataset_cases(balls, "train")
    plan = make_plan(fingerprint(cases, progress=False), patch_voxels=16 ** 3)
    volumes = planned_volumes(cases, plan, progress=False)
    patches = Patches(volumes, plan.patch_size, 60, foreground_fraction=1.0, seed=0)
    a, b = patches[3], patches[3]
    assert torch.equal(a["image"], b["image"]) and a["image"].shape == (1, *plan.patch_size)
    assert a["target"].shape == (1, *plan.patch_size) and a["target"].dtype == torch.int64
    assert all(patches[i]["target"].any() for i in range(20))  # every patch centred on the object
    patches.set_epoch(1)
    assert not torch.equal(patches[3]["image"], a["image"])


def test_a_2d_model_or_a_model_without_plan_is_refused(balls, tmp_path):
    with pytest.raises(InputError, match="trains a 3D model"):
        train(config(balls, model__name="unet-tiny"), tmp_path / "run")
    from medseg.infer.sliding import segment_volume_auto

    with pytest.raises(InputError, match="carries no 3D plan"):
        segment_volume_auto(build_model("unet3d-tiny"), read_image(balls / "imagesTr" / "b0.nii.gz"))


@pytest.mark.parametrize("name,objective,model", [("unet3d_hippocampus", "volume", "unet3d"),
                                                  ("unet3d_la_heart", "volume", "unet3d"),
                                                  ("vit3d_hippocampus", "volume", "vit3d"), ("mae_3d", "mae", "mae3d")])
def test_the_shipped_configs_load(name, objective, model):
    loaded = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml")
    assert (loaded.train.objective, loaded.model.name) == (objective, model)


def test_mae_pretrains_and_a_vit_fine_tunes_from_it_with_layer_decay(balls, tmp_path, capsys):
    from medseg.train.optim import make_optimizer

    pre = config(balls, model__name="mae3d-tiny", train__objective="mae", data__val_split="null",
                 data__crop_size="[16,16,16]", data__augment="true", train__epochs=2)
    result = train(pre, tmp_path / "mae")
    assert result["best_dice"] is None
    losses = [s["loss"] for s in result["steps"]]
    assert losses and all(np.isfinite(losses))
    assert (tmp_path / "mae" / "latest.safetensors").is_file()

    assert main(["pretrain", str(tmp_path / "nothing.yaml")]) != 0  # a missing config is an error, not a traceback
    fine = config(balls, model__name="vit3d-tiny", model__init_encoder=str(tmp_path / "mae" / "latest.safetensors"),
                  optim__layer_decay=0.5, data__augment="true")
    result = train(fine, tmp_path / "vit")
    assert all(np.isfinite(h["train_loss"]) for h in result["history"] if h["epoch"] > 0)
    model = build_model("vit3d-tiny", checkpoint=tmp_path / "vit" / "best.safetensors")
    assert model.plan.classes == [1, 2] and model.out_channels == 3

    from medseg.models.build import load_encoder_weights, load_state_dict

    start = build_model("vit3d-tiny")
    load_encoder_weights(start, tmp_path / "mae" / "latest.safetensors")
    mae_state = load_state_dict(tmp_path / "mae" / "latest.safetensors")
    torch.testing.assert_close(start.image_encoder.patch_embed.weight, mae_state["image_encoder.patch_embed.weight"])
    rates = sorted({g["lr"] for g in make_optimizer(start, fine.optim).param_groups})
    assert rates == pytest.approx([5e-3 * 0.5 ** k for k in (3, 2, 1, 0)])  # patch embedding ... decoder


def test_mae_refuses_validation_and_a_segmenter(balls, tmp_path):
    with pytest.raises(InputError, match="val_split: null"):
        train(config(balls, model__name="mae3d-tiny", train__objective="mae"), tmp_path / "a")
    with pytest.raises(InputError, match="masked autoencoder"):
        train(config(balls, model__name="unet3d-tiny", train__objective="mae", data__val_split="null",
                     data__crop_size="[16,16,16]"), tmp_path / "b")
    with pytest.raises(InputError, match="layer_decay"):
        train(config(balls, optim__layer_decay=0.5), tmp_path / "c")


def test_postprocess_decides_on_val_and_the_weights_carry_it(balls, tmp_path, capsys):
    from medseg.data.masks import components
    from medseg.infer.sliding import segment_volume_auto

    train(config(balls, train__epochs=2), tmp_path / "run")
    weights, out, report = tmp_path / "run" / "best.safetensors", tmp_path / "pp.safetensors", tmp_path / "pp.json"
    argv = ["postprocess", str(balls), "--model", "unet3d-tiny", "--checkpoint", str(weights), "--out", str(out),
            "--json", str(report), "--no-progress"]
    assert main(argv) == 0
    assert "keep largest component" in capsys.readouterr().out
    decision = json.loads(report.read_text())
    assert decision["split"] == "val" and set(decision["classes"]) == {"1", "2"}
    for entry in decision["classes"].values():
        assert entry["keep"] == (entry["largest"] >= entry["raw"])
    model = build_model("unet3d-tiny", checkpoint=out)
    assert model.plan.keep_largest == decision["keep_largest"]
    model.set_plan(dataclasses.replace(model.plan, keep_largest=[1, 2]))  # both, to see the rule applied
    labels = segment_volume_auto(model, read_image(balls / "imagesTr" / "b7.nii.gz"))
    assert all(len(components(labels == c, min_size=1)[1]) <= 1 for c in (1, 2))

    assert main(argv) == 2  # never overwritten
    assert main([*argv[:-1], "--split", "test", "--overwrite"]) == 2
    assert "decide on val" in capsys.readouterr().err


def test_weights_whose_plan_predates_a_plan_field_still_load(tmp_path):
    from safetensors.torch import save_file

    from medseg.data.planning import Plan

    model = build_model("unet3d-tiny")
    model.set_plan(Plan((1.0, 1.0, 1.0), "zscore", (16, 16, 16), 2, (20, 20, 20), [1, 2]))
    state = model.state_dict()
    older = {k: v for k, v in model.plan.to_dict().items() if k != "keep_largest"}
    state["plan_json"] = torch.tensor(list(json.dumps(older, sort_keys=True).encode()), dtype=torch.uint8)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "old.safetensors")
    loaded = build_model("unet3d-tiny", checkpoint=tmp_path / "old.safetensors")
    assert loaded.plan.classes == [1, 2] and loaded.plan.keep_largest == []


def test_a_unet_takes_its_plans_pooling_and_keeps_it_in_its_weights(tmp_path):
    """A thick-slice plan pools only in-plane at first; the checkpoint rebuilds the same network, and a plan
    without pooling (weights made before it was planned) keeps 2 on every axis, as it trained."""
    from safetensors.torch import save_file

    from medseg.data.planning import Plan

    model = build_model("unet3d-tiny")
    plan = Plan((10.0, 1.5, 1.5), "zscore", (16, 32, 32), 1, (10, 30, 30), [1], coarse_axes=[0],
                pool_strides=[(1, 2, 2), (2, 2, 2)])
    model.set_plan(plan)
    assert _first_stride(model) == (1, 2, 2)
    assert model(torch.zeros(1, 1, 4, 32, 32)).shape == (1, 2, 4, 32, 32)  # 4 slices: pooled once only
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    loaded = build_model("unet3d-tiny", checkpoint=tmp_path / "w.safetensors")
    assert loaded.plan.pool_strides == [(1, 2, 2), (2, 2, 2)] and _first_stride(loaded) == (1, 2, 2)
    x = torch.randn(1, 1, 4, 32, 32)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    older = build_model("unet3d-tiny")
    older.set_plan(Plan.from_dict({**plan.to_dict(), "pool_strides": None}))
    assert _first_stride(older) == (2, 2, 2)


def _first_stride(model) -> tuple[int, int, int]:
    return next(m.stride for m in model.net.modules() if isinstance(m, torch.nn.Conv3d))
