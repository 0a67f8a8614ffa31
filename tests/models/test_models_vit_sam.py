"""SAM-style ViT encoder (``medseg.models.vit_sam``): shapes, sizes, windows, relative positions, gradients.

Every model here is tiny (embed 32, depth 2, heads 2, window 4, 64-128 px) except the ViT-B builder,
whose parameters are counted without running it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medseg.models.vit_sam import (Attention, Block, SamViTEncoder, build_sam_vit_b_encoder, rel_pos_lookup,
                                   resize_rel_table, window_partition, window_unpartition)

DIM, HEADS, WINDOW = 32, 2, 4


def _tiny(img_size: int = 64, **kw) -> SamViTEncoder:
    torch.manual_seed(0)
    args = dict(img_size=img_size, embed_dim=DIM, depth=2, num_heads=HEADS, window_size=WINDOW,
                global_attn_indexes=(1,), out_chans=16)
    args.update(kw)
    return SamViTEncoder(**args).eval()


def _images(batch: int, side: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_output_shape_at_native_size():
    out = _tiny()(_images(2, 64))
    assert out.shape == (2, 16, 4, 4)
    assert torch.isfinite(out).all()


def test_default_output_channels_are_256():
    model = SamViTEncoder(img_size=64, embed_dim=DIM, depth=1, num_heads=HEADS, window_size=WINDOW,
                          global_attn_indexes=())
    assert model(_images(1, 32)).shape == (1, 256, 2, 2)


@pytest.mark.parametrize("side", [16, 48, 80, 128])
def test_any_side_divisible_by_16_runs(side):
    """Other sides resize the position embedding and the global block's relative tables; 80 px is a
    5 x 5 grid, not a multiple of the window, so windows are padded."""
    out = _tiny()(_images(1, side))
    assert out.shape == (1, 16, side // 16, side // 16)
    assert torch.isfinite(out).all()


def test_non_square_input_runs():
    assert _tiny()(torch.rand(1, 3, 48, 96)).shape == (1, 16, 3, 6)


def test_side_not_divisible_by_patch_is_an_error():
    with pytest.raises(ValueError, match="divisible"):
        _tiny()(_images(1, 72))


def test_position_embedding_is_resized_not_cropped():
    model = _tiny()
    pos = model.position_embedding((8, 8))
    assert pos.shape == (1, 8, 8, DIM)
    assert model.position_embedding((4, 4)) is model.pos_embed
    # bicubic resize of a constant field stays constant
    with torch.no_grad():
        model.pos_embed.fill_(0.5)
    assert torch.allclose(model.position_embedding((7, 9)), torch.full((1, 7, 9, DIM), 0.5), atol=1e-5)


def test_backward_reaches_every_parameter():
    model = _tiny().train()
    out = model(_images(2, 80))
    F.mse_loss(out, torch.zeros_like(out)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_checkpointing_gives_the_same_output_and_gradients():
    images = _images(1, 64)
    results = []
    for use_checkpoint in (False, True):
        model = _tiny().train()
        model.use_checkpoint = use_checkpoint
        out = model(images)
        out.pow(2).mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.allclose(out_a, out_b, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_a, grads_b))


def test_windowed_and_global_blocks_differ():
    """Identical weights: a windowed block only mixes tokens inside each 4 x 4 window, a global one
    mixes the whole 8 x 8 grid."""
    torch.manual_seed(0)
    windowed = Block(DIM, HEADS, 4.0, use_rel_pos=False, window_size=WINDOW, grid_size=(8, 8)).eval()
    global_ = Block(DIM, HEADS, 4.0, use_rel_pos=False, window_size=0, grid_size=(8, 8)).eval()
    global_.load_state_dict(windowed.state_dict())

    x = torch.randn(1, 8, 8, DIM)
    x2 = x.clone()
    x2[:, 0, 0] += torch.randn(DIM)  # perturb one token of the top-left window (not by a constant: LayerNorm)
    with torch.no_grad():
        dw = (windowed(x2) - windowed(x)).abs().sum(-1)[0]
        dg = (global_(x2) - global_(x)).abs().sum(-1)[0]
    assert not torch.allclose(windowed(x), global_(x))
    assert dw[:WINDOW, :WINDOW].min() > 1e-4       # inside its window: changed
    assert dw[WINDOW:, :].max() == 0 and dw[:, WINDOW:].max() == 0  # other windows untouched
    assert dg.min() > 1e-4                          # global: every token changed


def test_encoder_block_layout_follows_global_indexes():
    model = SamViTEncoder(img_size=64, embed_dim=DIM, depth=4, num_heads=HEADS, window_size=WINDOW,
                          global_attn_indexes=(1, 3))
    assert [b.window_size for b in model.blocks] == [WINDOW, 0, WINDOW, 0]
    assert model.blocks[0].attn.rel_pos_h.shape == (2 * WINDOW - 1, DIM // HEADS)
    assert model.blocks[1].attn.rel_pos_h.shape == (2 * 4 - 1, DIM // HEADS)  # native grid 64/16


def test_window_partition_pads_and_round_trips():
    x = torch.randn(2, 5, 6, 3)
    windows, padded = window_partition(x, 4)
    assert padded == (8, 8)
    assert windows.shape == (2 * 2 * 2, 4, 4, 3)
    assert windows[1, :, 2:].abs().max() == 0  # top-right window of image 0: columns 6, 7 are padding
    assert torch.equal(window_unpartition(windows, 4, padded, (5, 6)), x)


def test_rel_pos_lookup_indexes_by_offset():
    table = torch.arange(7.0)[:, None].repeat(1, 2)  # row r holds value r; offsets -3..3 -> rows 0..6
    lookup = rel_pos_lookup(table, 4)
    for i in range(4):
        for j in range(4):
            assert lookup[i, j, 0] == i - j + 3


def test_rel_table_is_resized_linearly():
    table = torch.randn(7, 5)
    assert resize_rel_table(table, 4) is table
    assert resize_rel_table(table, 6).shape == (11, 5)
    ramp = torch.linspace(-1, 1, 7)[:, None]
    resized = resize_rel_table(ramp, 8)[:, 0]
    assert (resized[1:] > resized[:-1]).all()  # monotone stays monotone


def test_attention_matches_a_naive_relative_position_reference():
    """Logit of query (qy, qx) on key (ky, kx) = q.k / sqrt(D) + q.Rh[qy-ky] + q.Rw[qx-kx]."""
    torch.manual_seed(0)
    h, w = 3, 4
    attn = Attention(DIM, HEADS, use_rel_pos=True, input_size=(h, w)).eval()
    x = torch.randn(1, h, w, DIM)
    with torch.no_grad():
        out = attn(x)
        d = DIM // HEADS
        qkv = attn.qkv(x).reshape(h * w, 3, HEADS, d)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (N, heads, D)
        coords = [(y, xx) for y in range(h) for xx in range(w)]
        heads_out = []
        for n in range(HEADS):
            logits = torch.empty(h * w, h * w)
            for i, (qy, qx) in enumerate(coords):
                for j, (ky, kx) in enumerate(coords):
                    logits[i, j] = (q[i, n] @ k[j, n]) / math.sqrt(d) \
                        + q[i, n] @ attn.rel_pos_h[qy - ky + h - 1] + q[i, n] @ attn.rel_pos_w[qx - kx + w - 1]
            heads_out.append(logits.softmax(-1) @ v[:, n])
        expected = attn.proj(torch.cat(heads_out, dim=-1)).reshape(1, h, w, DIM)
    assert torch.allclose(out, expected, atol=1e-5)


def test_vit_b_builder_has_about_90m_parameters():
    model = build_sam_vit_b_encoder()
    count = sum(p.numel() for p in model.parameters())
    assert 89e6 <= count <= 90e6, count
    assert model.pos_embed.shape == (1, 64, 64, 768)
    assert [i for i, b in enumerate(model.blocks) if b.window_size == 0] == [2, 5, 8, 11]
    assert {b.window_size for b in model.blocks} == {0, 14}
    assert model.neck[-1].weight.shape == (256,)
