"""The plain ViT, its UNETR segmenter and the masked autoencoder: shapes in 2D and 3D, token order,
masking, and the MAE loss reading only the hidden tokens."""

from __future__ import annotations

import pytest
import torch

from medseg.models import build_model, list_models
from medseg.models.mae import MaskedAutoencoder
from medseg.models.unetr import ViTSegmenter
from medseg.models.vit import ViTEncoder, patchify, sincos_position_code


def test_patchify_follows_the_token_order_of_the_patch_embedding():
    encoder = ViTEncoder(3, 1, patch=2, dim=6, depth=1, heads=1)
    x = torch.randn(2, 1, 4, 6, 2)
    with torch.no_grad():
        conv = encoder.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        w = encoder.patch_embed.weight.reshape(6, -1)  # (dim, C * p^3) in (z, y, x) voxel order
        manual = patchify(x, 2) @ w.T + encoder.patch_embed.bias
    torch.testing.assert_close(conv, manual, atol=1e-5, rtol=1e-5)


def test_position_codes_differ_per_token_and_need_a_divisible_width():
    code = sincos_position_code((2, 3, 4), 12)
    assert code.shape == (24, 12) and len({tuple(r.tolist()) for r in code}) == 24
    with pytest.raises(ValueError, match="multiple of 2 x 3"):
        sincos_position_code((2, 2, 2), 8)


@pytest.mark.parametrize("dims,shape", [(3, (2, 1, 16, 32, 24)), (2, (2, 1, 32, 48))])
def test_unetr_maps_input_to_class_logits_at_full_resolution(dims, shape):
    model = ViTSegmenter(ViTEncoder(dims, 1, patch=8, dim=24, depth=3, heads=2), out_channels=3, features=4)
    assert model(torch.randn(shape)).shape == (shape[0], 3, *shape[2:])
    with pytest.raises(ValueError, match="multiple of the ViT's patch"):
        model(torch.randn(1, 1, *[12] * dims))


def test_the_masked_autoencoder_hides_three_quarters_and_scores_only_them():
    mae = MaskedAutoencoder(ViTEncoder(3, 1, patch=4, dim=12, depth=2, heads=2), levels=2, decoder_dim=12,
                            decoder_heads=2)
    x = torch.randn(2, 1, 8, 16, 16)  # 2 x 4 x 4 = 32 tokens
    gen = torch.Generator().manual_seed(0)
    loss, prediction, mask = mae(x, generator=gen)
    assert prediction.shape == (2, 32, 64) and mask.sum(1).tolist() == [24, 24]
    loss.backward()
    assert all(p.grad is not None for p in mae.image_encoder.parameters())
    # the loss is the MSE of the hidden tokens alone: perfect hidden tokens give 0 whatever the visible ones
    target = patchify(x, 4)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mae.head.weight.zero_()
        mae.head.bias.zero_()
        _, _, same_mask = mae(x, generator=gen)
    assert torch.equal(same_mask, mask)
    expected = (target[mask] ** 2).mean()
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(mae(x, generator=gen)[0], expected)


def test_the_registry_has_the_3d_vit_and_its_pretraining_model():
    assert {"vit3d", "vit3d-tiny"} <= set(list_models("automatic"))
    assert {"mae3d", "mae3d-tiny"} <= set(list_models("pretraining"))  # with the HR encoders' mim-hr-*
    mae, vit = build_model("mae3d-tiny"), build_model("vit3d-tiny")
    # the MAE's encoder and the segmenter's share names, so pre-trained weights load into the segmenter
    assert set(mae.image_encoder.state_dict()) == set(vit.image_encoder.state_dict())
    assert vit.layer_of("image_encoder.patch_embed.weight") == 0
    assert vit.layer_of("image_encoder.blocks.1.linear1.weight") == 2 and vit.layer_of("head.conv.conv.weight") == 3
