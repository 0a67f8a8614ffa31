"""Parameter-efficient fine-tuning (adapters, LoRA, a conv branch) of the image encoders: it starts as the identity,
only its parameters and the mask decoder train, gradients reach it through the frozen encoder, it
round-trips through a checkpoint, and LoRA folds into the weights (and so into an ONNX export)."""

from __future__ import annotations

import pytest
import torch

from medseg.models import build_model
from medseg.models.peft import PEFT_KINDS, add_peft, merge_lora
from medseg.train.optim import TrainForward, select_trainable

MODELS = ("litemedsam-tiny", "hr-test")


def run(model, images, boxes):
    with torch.no_grad():
        return model(images, boxes=boxes)[0]


def inputs(model):
    torch.manual_seed(0)
    s = model.image_size
    return torch.rand(2, 3, s, s), torch.tensor([[4.0, 6.0, s * 0.6, s * 0.7], [s * 0.2, s * 0.1, s - 3.0, s - 5.0]])


def perturb(model) -> None:
    """Move every parameter of the fine-tuning (and of a fusion head, which a conv branch feeds) away from
    its zero start, as training would."""
    gen = torch.Generator().manual_seed(1)
    fusion = model.mask_decoder.fusion
    with torch.no_grad():
        for p in [*model.peft.parameters(), *([] if fusion is None else fusion.parameters())]:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", PEFT_KINDS)
def test_fine_tuning_starts_as_the_identity_and_trains_alone_with_the_decoder(name, kind):
    model = build_model(name)
    images, boxes = inputs(model)
    before = run(model, images, boxes)
    added = add_peft(model, kind, rank=4)
    torch.testing.assert_close(run(model, images, boxes), before)
    trainable, total = select_trainable(model, kind)
    heads = sum(p.numel() for n, p in model.mask_decoder.named_parameters() if not n.startswith("transformer."))
    assert trainable == sum(p.numel() for p in model.peft.parameters()) + heads and 0 < added < 0.5 * total
    assert added <= trainable  # a conv branch's new fusion head is among the decoder's heads
    assert not any(p.requires_grad for p in model.image_encoder.parameters())

    perturb(model)
    assert not torch.allclose(run(model, images, boxes), before)
    forward = TrainForward(model).train()
    embedding, features = forward.encode(images)  # the encoder is frozen, but its fine-tuning is not
    maps = [] if features is None else list(features.values())
    sum(x.square().mean() for x in [embedding, *maps]).backward()
    assert all(p.grad is not None for p in model.peft.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.image_encoder.parameters())


@pytest.mark.parametrize("kind", PEFT_KINDS)
def test_a_fine_tuned_checkpoint_rebuilds_its_adapters_before_loading(kind, tmp_path):
    from safetensors.torch import save_file

    model = build_model("litemedsam-tiny")
    add_peft(model, kind, rank=3)
    perturb(model)
    path = tmp_path / "tuned.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = build_model("litemedsam-tiny", checkpoint=path)
    assert loaded.peft.kind == kind and loaded.peft.rank == 3
    images, boxes = inputs(model)
    torch.testing.assert_close(run(loaded, images, boxes), run(model.eval(), images, boxes))


def test_lora_folds_into_the_weights_and_exports_as_a_plain_graph(tmp_path):
    pytest.importorskip("onnx")
    from medseg.engines.export import export_model

    model = build_model("litemedsam-tiny")
    add_peft(model, "lora", rank=4)
    perturb(model)
    images, boxes = inputs(model)
    tuned = run(model, images, boxes)
    export_model(model, tmp_path / "onnx", "litemedsam-tiny")
    assert model.peft is not None  # export folds a copy; the caller's model keeps its updates
    assert merge_lora(model) and model.peft is None and "peft.spec" not in model.state_dict()
    torch.testing.assert_close(run(model, images, boxes), tuned, atol=1e-4, rtol=1e-4)
    assert not merge_lora(model)



def test_the_high_pass_removes_smooth_content_and_keeps_fine_detail():
    from medseg.models.peft import high_pass

    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    smooth = (3.0 + torch.cos(2 * torch.pi * yy / 16))[None, None]  # the mean and the lowest frequency
    checker = ((yy + xx) % 2 * 2 - 1)[None, None]                   # the highest frequency
    torch.testing.assert_close(high_pass(smooth), torch.zeros_like(smooth), atol=1e-5, rtol=0)
    torch.testing.assert_close(high_pass(smooth + checker), checker, atol=1e-5, rtol=1e-5)
