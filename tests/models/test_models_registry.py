"""Contract every registered model keeps (timm ``tests/test_models.py`` style), with random weights.

The full-size ``litemedsam`` encoder costs seconds per image on a CPU, so it only runs one forward
pass at batch 1; backward, round trips and input-size checks run on the small variants.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from medseg.errors import CheckpointError
from medseg.models import PromptableSegmenter, build_model, list_models
from medseg.models.build import MODELS

# Models too slow for more than one forward pass in the unit tests.
SLOW_MODELS = {"litemedsam", "hr-small", "hr-tiny"}
EMBED_DIM = 256


def _fast_models() -> list[str]:
    return [name for name in list_models("promptable") if name not in SLOW_MODELS]


@pytest.fixture(scope="module")
def built():
    """Build each model at most once per module (seeded random weights)."""
    cache: dict[str, PromptableSegmenter] = {}

    def get(name: str) -> PromptableSegmenter:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = build_model(name)
        return cache[name]

    return get


def _boxes(batch: int, size: int) -> torch.Tensor:
    """Boxes well inside a size x size model input, one per image."""
    base = torch.tensor([0.1, 0.15, 0.6, 0.7]) * size
    return torch.stack([base + 2.0 * i for i in range(batch)])


def test_list_models_is_sorted_registry():
    names = list_models()
    assert names == sorted(MODELS)
    assert {"litemedsam", "litemedsam-tiny"} <= set(names)


def test_unknown_model_name_is_an_input_error_listing_models():
    from medseg.errors import InputError

    with pytest.raises(InputError, match="litemedsam-tiny"):
        build_model("no-such-model")


def test_model_without_published_weights_refuses_pretrained():
    with pytest.raises(CheckpointError, match="no published weights"):
        build_model("litemedsam-tiny", pretrained=True)


@pytest.mark.parametrize("name", list_models("promptable"))
def test_model_forward(name, built):
    """encode -> (B, 256, E, E) (E = S/4 TinyViT, S/16 HR); decode -> logits (B, M, S, S), iou (B, M), M = 1 or 3."""
    model = built(name)
    assert isinstance(model, PromptableSegmenter)
    assert not model.training, "build_model must return the model in eval mode"
    size = model.image_size
    batch = 1 if name in SLOW_MODELS else 2
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g)
    boxes = _boxes(batch, size)
    with torch.no_grad():
        emb, features = model.encode_features(images)
        side = model.prompt_encoder.embedding_size[0]
        assert side in (size // 4, size // 16) and emb.shape == (batch, EMBED_DIM, side, side)
        assert torch.isfinite(emb).all()
        for multimask, m in ((False, 1), (True, 3)):
            logits, iou = model.decode(emb, boxes=boxes, multimask=multimask, features=features)
            assert logits.shape == (batch, m, size, size)
            assert iou.shape == (batch, m)
            assert torch.isfinite(logits).all() and torch.isfinite(iou).all()
        if name not in SLOW_MODELS:  # forward() is decode(encode()); not worth a second encoder pass here
            logits_f, iou_f = model(images, boxes=boxes)
            logits_d, iou_d = model.decode(emb, boxes=boxes, features=features)
            torch.testing.assert_close(logits_f, logits_d)
            torch.testing.assert_close(iou_f, iou_d)


@pytest.mark.parametrize("name", _fast_models())
def test_inference_path_matches_the_training_path(name):
    """Without autograd the model runs faster kernels (BatchNorm folded into its convolution, TinyViT's
    window attention as one matmul-plus-bias) and the Predictor's channels-last layout; the numbers must
    be those of the plain path that training runs. BatchNorm statistics are randomised so the folding
    is exercised (fresh ones are the identity)."""
    torch.manual_seed(0)
    model = build_model(name)
    g = torch.Generator().manual_seed(3)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
        bn.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    size = model.image_size
    images = torch.rand(2, 3, size, size, generator=g)
    boxes = _boxes(2, size)
    logits, iou = model(images, boxes=boxes)  # autograd on: the training path
    model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        fast_logits, fast_iou = model(images, boxes=boxes)
    torch.testing.assert_close(fast_logits, logits.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast_iou, iou.detach(), atol=1e-4, rtol=1e-4)


# Parameters a prompt type does not reach: box-only prompts use no point, padding or mask embedding;
# click + mask prompts (no box) use no box-corner and no "no mask" embedding. Together they reach
# every parameter.
# A box asks for the single mask (hypernetwork 0), a multimask click for the other three: the masks not
# asked for are not computed.
BOX_UNUSED = ("prompt_encoder.mask_downscaling.", "prompt_encoder.not_a_point_embed.",
              "prompt_encoder.point_embeddings.0.", "prompt_encoder.point_embeddings.1.",
              *(f"mask_decoder.output_hypernetworks_mlps.{i}." for i in (1, 2, 3)))
CLICK_MASK_UNUSED = ("prompt_encoder.point_embeddings.2.", "prompt_encoder.point_embeddings.3.",
                     "prompt_encoder.no_mask_embed.", "mask_decoder.output_hypernetworks_mlps.0.")
# The key bias of the prompt tokens' attention to the image adds one constant to each token's scores, which
# the softmax cancels: its gradient is zero, and the re-associated attention leaves it out.
NO_GRADIENT = ("mask_decoder.transformer.layers.0.cross_attn_token_to_image.k_proj.bias",
               "mask_decoder.transformer.layers.1.cross_attn_token_to_image.k_proj.bias",
               "mask_decoder.transformer.final_attn_token_to_image.k_proj.bias")


def test_every_parameter_is_reached_by_some_prompt(tiny_model):
    both = [n for n, _ in tiny_model.named_parameters() if n.startswith(BOX_UNUSED) and n.startswith(CLICK_MASK_UNUSED)]
    assert not both


@pytest.mark.parametrize("name", _fast_models())
@pytest.mark.parametrize("prompt", ["box", "clicks+mask"])
def test_model_backward(name, prompt):
    """Every trainable parameter a prompt type should reach gets a finite gradient, and no other does."""
    torch.manual_seed(0)
    model = build_model(name).train()
    size = model.image_size
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, size, size, generator=g)
    if prompt == "box":
        logits, iou = model(images, boxes=_boxes(2, size))
        unused = BOX_UNUSED
    else:
        points = (torch.tensor([[[10.0, 12.0], [30.0, 40.0]], [[5.0, 5.0], [50.0, 20.0]]]),
                  torch.tensor([[1, 0], [1, 1]]))
        masks = torch.randn(2, 1, size, size, generator=g)
        logits, iou = model(images, points=points, masks=masks, multimask=True)
        unused = CLICK_MASK_UNUSED
    (logits.mean() + iou.mean()).backward()

    params = dict(model.named_parameters())
    assert all(p.requires_grad for p in params.values())
    no_grad = sorted(n for n, p in params.items() if p.grad is None)
    expected = sorted(n for n in params if n.startswith(unused))
    assert expected, "the list of unused parameter prefixes no longer matches the model"
    expected = sorted(expected + [n for n in params if n in NO_GRADIENT])
    assert no_grad == expected
    bad = [n for n, p in params.items() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad[:5]}"
    # The gradient must reach the first layer of the image encoder, not stop in the decoder.
    first = next(n for n in params if n.startswith("image_encoder."))
    assert params[first].grad.abs().sum() > 0, first


@pytest.mark.parametrize("name", _fast_models())
def test_model_safetensors_round_trip(name, built, tmp_path, tiny_images):
    """save_file(state_dict) then build_model(checkpoint=...) gives the same tensors and outputs."""
    model = built(name)
    path = tmp_path / f"{name}.safetensors"
    save_file(model.state_dict(), str(path))
    torch.manual_seed(123)  # different random init: only the checkpoint can make the outputs equal
    loaded = build_model(name, checkpoint=path)
    assert not loaded.training
    state, state2 = model.state_dict(), loaded.state_dict()
    assert state.keys() == state2.keys()
    for key in state:
        assert torch.equal(state[key], state2[key]), key
    size = model.image_size
    images = torch.nn.functional.interpolate(tiny_images, size=(size, size)) if size != 64 else tiny_images
    with torch.no_grad():
        out = model(images, boxes=_boxes(2, size), multimask=True)
        out2 = loaded(images, boxes=_boxes(2, size), multimask=True)
    torch.testing.assert_close(out2, out, rtol=0, atol=0)


@pytest.mark.parametrize("wrap", [None, "model", "state_dict"])
def test_model_pth_round_trip(tiny_model, tmp_path, wrap):
    """A .pth state dict loads too, bare or under a ``model`` / ``state_dict`` key."""
    state = tiny_model.state_dict()
    path = tmp_path / "tiny.pth"
    torch.save(state if wrap is None else {wrap: state, "epoch": torch.tensor(3)}, path)
    torch.manual_seed(7)
    loaded = build_model("litemedsam-tiny", checkpoint=str(path))
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("size", [64, 96, 72, 100])
def test_tiny_encoder_any_size_divisible_by_four(tiny_model, size):
    """Sides that are not the training size, or not a multiple of the window, still give S/4 embeddings."""
    g = torch.Generator().manual_seed(size)
    with torch.no_grad():
        emb = tiny_model.encode(torch.rand(1, 3, size, size, generator=g))
    assert emb.shape == (1, EMBED_DIM, size // 4, size // 4)
    assert torch.isfinite(emb).all()


def _prompt_sets(size: int):
    box = torch.tensor([[8.0, 10.0, 40.0, 50.0], [20.0, 16.0, 56.0, 36.0]])
    pts = (torch.tensor([[[20.0, 30.0]], [[30.0, 25.0]]]), torch.tensor([[1], [1]]))
    pts_neg = (torch.tensor([[[20.0, 30.0], [50.0, 5.0]], [[30.0, 25.0], [2.0, 60.0]]]),
               torch.tensor([[1, 0], [1, 0]]))
    g = torch.Generator().manual_seed(3)
    mask = torch.randn(2, 1, size, size, generator=g)
    return {
        "box": dict(boxes=box),
        "points": dict(points=pts),
        "points+negative": dict(points=pts_neg),
        "box+points": dict(boxes=box, points=pts),
        "mask": dict(masks=mask),
        "box+mask": dict(boxes=box, masks=mask),
        "box+points+mask": dict(boxes=box, points=pts_neg, masks=mask),
    }


@pytest.fixture(scope="module")
def tiny_embedding(tiny_model, tiny_images):
    with torch.no_grad():
        return tiny_model.encode(tiny_images)


@pytest.mark.parametrize("kind", list(_prompt_sets(64)))
@pytest.mark.parametrize("multimask", [False, True])
def test_tiny_prompt_kinds_run(tiny_model, tiny_embedding, kind, multimask):
    prompts = _prompt_sets(tiny_model.image_size)[kind]
    with torch.no_grad():
        logits, iou = tiny_model.decode(tiny_embedding, multimask=multimask, **prompts)
    m = 3 if multimask else 1
    assert logits.shape == (2, m, 64, 64) and iou.shape == (2, m)
    assert torch.isfinite(logits).all() and torch.isfinite(iou).all()


def test_tiny_prompts_change_the_output(tiny_model, tiny_embedding):
    """Each prompt kind actually reaches the decoder: different prompts, different logits."""
    sets = _prompt_sets(tiny_model.image_size)
    with torch.no_grad():
        outs = {k: tiny_model.decode(tiny_embedding, **v)[0] for k, v in sets.items()}
        moved = tiny_model.decode(tiny_embedding, boxes=sets["box"]["boxes"] + 6.0)[0]
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(outs[a], outs[b]), f"{a} and {b} give the same logits"
    assert not torch.allclose(outs["box"], moved), "box position is ignored"


def test_tiny_single_embedding_broadcasts_over_prompts(tiny_model, tiny_embedding, tiny_boxes):
    """One image embedding with B prompt sets equals that embedding repeated B times."""
    emb = tiny_embedding[:1]
    with torch.no_grad():
        a = tiny_model.decode(emb, boxes=tiny_boxes, multimask=True)
        b = tiny_model.decode(emb.expand(2, -1, -1, -1).contiguous(), boxes=tiny_boxes, multimask=True)
    torch.testing.assert_close(a, b)


def test_tiny_batch_items_are_independent(tiny_model, tiny_images, tiny_boxes):
    """Batch item i of a forward pass equals a forward pass of item i alone (eval mode)."""
    with torch.no_grad():
        both = tiny_model(tiny_images, boxes=tiny_boxes)
        first = tiny_model(tiny_images[:1], boxes=tiny_boxes[:1])
        second = tiny_model(tiny_images[1:], boxes=tiny_boxes[1:])
    torch.testing.assert_close(both[0], torch.cat([first[0], second[0]]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(both[1], torch.cat([first[1], second[1]]), rtol=1e-4, atol=1e-4)
