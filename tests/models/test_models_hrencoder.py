"""The high-resolution encoder and its gated linear attention: exact against a quadratic reference,
relative positions, cost linear in pixels, any side divisible by 32, the 1024 students' contract
(output shapes, gradients, the teacher's decoder, the fusion head starting as a no-op)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from medseg.errors import CheckpointError
from medseg.models import build_model
from medseg.models.hrencoder import HREncoder
from medseg.models.linear_attention import GatedLinearAttention, apply_rope, rope_angles


def _naive_attention(attn: GatedLinearAttention, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The same attention written as an explicit N x N weight matrix (quadratic, for checking)."""
    b, n, c = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    q, k = (torch.nn.functional.elu(t) + 1 for t in attn.qk(x).chunk(2, dim=-1))
    v = attn.value(x)
    q, k, vh = (t.reshape(b, n, heads, d).transpose(1, 2) for t in (q, k, v))
    angles = rope_angles(*hw, d, x.device)
    weights = apply_rope(q, angles) @ apply_rope(k, angles).transpose(-2, -1)   # (B, heads, N, N)
    norm = (q @ k.transpose(-2, -1)).sum(-1, keepdim=True)                        # sum_j q_i . k_j
    out = ((weights @ vh) / norm).transpose(1, 2).reshape(b, n, c)
    local = attn.lepe(v.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
    return attn.proj((out + local) * torch.nn.functional.silu(attn.gate(x)))


def test_linear_attention_equals_its_quadratic_form():
    torch.manual_seed(0)
    attn = GatedLinearAttention(32, num_heads=2)
    x = torch.randn(2, 6 * 5, 32)
    torch.testing.assert_close(attn(x, (6, 5)), _naive_attention(attn, x, (6, 5)), rtol=1e-4, atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)
    angles = rope_angles(10, 10, 8, torch.device("cpu"))

    def score(i: int, j: int) -> float:
        grid_q = torch.zeros(100, 8)
        grid_k = torch.zeros(100, 8)
        grid_q[i], grid_k[j] = q, k
        return float(apply_rope(grid_q, angles)[i] @ apply_rope(grid_k, angles)[j])

    # (y, x) = (1, 2) vs (3, 5) and, shifted by (4, 3), (5, 5) vs (7, 8)
    assert score(1 * 10 + 2, 3 * 10 + 5) == pytest.approx(score(5 * 10 + 5, 7 * 10 + 8), abs=1e-5)
    assert score(1 * 10 + 2, 3 * 10 + 5) != pytest.approx(score(1 * 10 + 2, 3 * 10 + 6), abs=1e-3)
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_angles(4, 4, 6, torch.device("cpu"))


def _flops(model: torch.nn.Module, side: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, 3, side, side))
    return counter.get_total_flops()


def test_encoder_cost_grows_linearly_with_pixels():
    encoder = HREncoder(128, dims=(8, 16, 32, 32), depths=(1, 1, 2, 1), num_heads=(2, 2)).eval()
    small, large = _flops(encoder, 128), _flops(encoder, 512)  # 16x the pixels
    assert 15.5 < large / small < 16.5


@pytest.mark.parametrize("side", [64, 96, 160])
def test_encoder_runs_any_side_divisible_by_32(side):
    encoder = HREncoder(128, dims=(8, 16, 32, 32), depths=(1, 1, 1, 1), num_heads=(1, 1)).eval()
    with torch.no_grad():
        embedding, features = encoder.forward_features(torch.rand(1, 3, side, side))
    assert embedding.shape == (1, 256, side // 16, side // 16)
    assert features["stride4"].shape == (1, 8, side // 4, side // 4)
    assert features["stride8"].shape == (1, 16, side // 8, side // 8)
    with pytest.raises(ValueError, match="divisible by 32"):
        encoder(torch.rand(1, 3, side + 16, side))


def test_fusion_head_starts_as_a_no_op_and_then_learns():
    torch.manual_seed(0)
    model = build_model("hr-test").train()
    images = torch.rand(2, 3, 256, 256)
    boxes = torch.tensor([[10.0, 10.0, 90.0, 80.0], [20.0, 30.0, 200.0, 220.0]])
    embedding, features = model.encode_features(images)
    with_fusion, _ = model.decode(embedding, boxes=boxes, features=features)
    model.mask_decoder.fusion = None
    without, _ = model.decode(embedding, boxes=boxes)
    torch.testing.assert_close(with_fusion, without)

    model = build_model("hr-test").train()
    logits, _ = model(images, boxes=boxes)
    logits.mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if ".fusion." in n}
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads.values())
    with pytest.raises(ValueError, match="features"):
        model.decode(embedding, boxes=boxes)


def test_the_published_student_is_the_distilled_encoder_with_the_teachers_decoder(tmp_path, real_weights):
    from safetensors.torch import load_file

    from medseg.models.build import DISTILLED

    student = build_model("hr-small", pretrained=True)
    teacher = build_model("litemedsam", pretrained=True).state_dict()
    own = student.state_dict()
    shared = [k for k in teacher if k.startswith(("prompt_encoder.", "mask_decoder."))]
    assert shared and all(torch.equal(own[k], teacher[k]) for k in shared)
    encoder = load_file(str(DISTILLED["hr-small"][0]))
    assert encoder and all(torch.equal(own[k], v.float()) for k, v in encoder.items())
    assert set(encoder) == {k for k in own if k.startswith("image_encoder.")}
    with pytest.raises(CheckpointError, match="no published weights"):
        build_model("hr-tiny", pretrained=True)


def test_a_student_answers_at_1024_and_trains_end_to_end(tmp_path):
    student = build_model("hr-tiny").train()
    assert student.image_size == 1024
    logits, iou = student(torch.rand(1, 3, 1024, 1024), boxes=torch.tensor([[100.0, 200.0, 600.0, 700.0]]))
    assert logits.shape == (1, 1, 1024, 1024) and iou.shape == (1, 1)
    logits.mean().backward()
    first = next(p for n, p in student.named_parameters() if n.startswith("image_encoder."))
    assert first.grad is not None and first.grad.abs().sum() > 0
    path = tmp_path / "student.safetensors"
    save_file(student.state_dict(), str(path))
    again = build_model("hr-tiny", checkpoint=path)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in student.state_dict().items())
