"""The "unet" objective (automatic, prompt-free segmentation) on the tiny U-Net (64x64 input):
it trains through train(), its checkpoint loads with build_model, predict_mask returns masks at
the input's resolution, and a promptable-only trainable setting is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.errors import InputError
from medseg.data.datasets import dataset_cases
from medseg.models import build_model
from medseg.models.unet import UNetSegmenter, predict_mask
from medseg.train import load_config, train


@pytest.fixture
def unet_module():
    """medseg.train.unet: the "unet" objective."""
    import medseg.train.unet as module

    return module


def write_squares(root: Path, n: int = 10, seed: int = 0) -> Path:
    """RGB pictures 40 high x 48 wide with one bright square (the last one has none), 0/255 masks."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stems = [f"sq{i}" for i in range(n)]
    for i, stem in enumerate(stems):
        mask = np.zeros((40, 48), dtype=np.uint8)
        if i != n - 1:
            side = int(rng.integers(10, 18))
            y, x = int(rng.integers(0, 40 - side)), int(rng.integers(0, 48 - side))
            mask[y:y + side, x:x + side] = 255
        image = rng.integers(0, 60, (40, 48, 3)).astype(np.uint8)
        image[mask > 0] = rng.integers(180, 255, (int((mask > 0).sum()), 3))
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    (root / "splits.json").write_text(json.dumps({"train": stems[:8], "val": stems[8:]}))
    return root


@pytest.fixture
def squares(tmp_path) -> Path:
    return write_squares(tmp_path / "squares")


def config(root: Path, **extra):
    values = {"data.root": str(root), "model.name": "unet-tiny", "model.pretrained": False,
              "model.trainable": "all", "optim.lr": 3e-3, "optim.warmup_steps": 1, "train.epochs": 4,
              "train.batch_size": 4, "train.device": "cpu", "train.amp": "off", "train.progress": False,
              "train.objective": "unet"}
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return load_config(None, [f"{k}={v}" for k, v in values.items()])


def test_unet_objective_trains_and_its_checkpoint_loads(squares, tmp_path):
    result = train(config(squares), tmp_path / "run")
    losses = [h["train_loss"] for h in result["history"] if h["epoch"] > 0]
    assert len(losses) == 4 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(0 <= h["val_dice"] <= 1 for h in result["history"])
    model = build_model("unet-tiny", checkpoint=tmp_path / "run" / "best.safetensors")
    assert isinstance(model, UNetSegmenter) and model.image_size == 64


def test_predict_mask_returns_masks_at_the_input_resolution(squares):
    torch.manual_seed(0)
    model = build_model("unet-tiny")
    for shape in [(40, 48, 3), (97, 31), (64, 64)]:
        image = np.random.default_rng(1).integers(0, 255, shape).astype(np.uint8)
        mask = predict_mask(model, image)
        assert mask.dtype == bool and mask.shape == shape[:2]


def test_case_frames_flip_content_only_and_keep_empty_cases(squares, unet_module):
    cases = dataset_cases(squares, "train") + dataset_cases(squares, "val")
    plain, flipped = unet_module.CaseFrames(cases, 64), unet_module.CaseFrames(cases, 64, flip=True, seed=3)
    assert len(plain) == 10 and plain[9]["target"].sum() == 0  # the case without foreground is an item
    seen_flip = False
    for i in range(len(cases)):
        a, b = plain[i], flipped[i]
        assert torch.equal(a["image"][:, 53:], b["image"][:, 53:])  # padding rows (40x48 -> 53x64) untouched
        if not torch.equal(a["image"], b["image"]):
            seen_flip = True
            assert torch.equal(a["target"].flip(-1), b["target"])  # content fills the width here
    assert seen_flip


def test_unet_objective_needs_the_whole_model_trainable(squares, tmp_path):
    with pytest.raises(InputError, match="'all'"):
        train(config(squares, model__trainable="decoder"), tmp_path / "run")


def test_the_shipped_config_loads_and_makes_the_objective():
    from medseg.train.objectives import make_objective

    path = Path(__file__).resolve().parents[2] / "configs" / "unet_kvasir.yaml"
    loaded = load_config(path)
    assert (loaded.train.objective, loaded.model.name, loaded.model.pretrained) == ("unet", "unet", False)
    assert type(make_objective(loaded)).__name__ == "UNetObjective"
    assert build_model(loaded.model.name).image_size == 256
