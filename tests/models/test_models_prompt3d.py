"""The promptable 3D head (medseg.models.prompt3d): the adapter starts as the projection of the 2D
embeddings, prompts land where they were given on the token grid, the slice grid maps voxels to the
decoder's grid and back, and the registry builds litemedsam-3d with a head of under 10% of its parameters."""

from __future__ import annotations

import json

import pytest
import torch

from medseg.errors import CheckpointError
from medseg.models import build_model, list_models
from medseg.models.build import PROMPTABLE_3D
from medseg.models.prompt3d import PROMPT_CHANNELS, Promptable3D, SliceGrid, VolumePromptHead, prompt_maps
from medseg.models.weights import provenance_path


def test_the_spatial_adapter_starts_as_the_projection_of_the_slice_embeddings():
    torch.manual_seed(0)
    head = VolumePromptHead(embed_dim=16, dim=8)
    x = torch.randn(1, 16, 5, 6, 6)
    assert torch.allclose(head.adapt(x), head.project(x))
    head.adapter[0].down.weight.data.normal_()
    assert not torch.allclose(head.adapt(x), head.project(x))  # a trained adapter mixes slices


def test_the_decoder_answers_on_the_x2_grid_for_any_crop_and_slice_pooling():
    head = VolumePromptHead(embed_dim=16, dim=8)
    for z, e, pool in ((7, 6, 2), (3, 5, 1), (1, 4, 2)):
        features = head.adapt(torch.randn(1, 16, z, e, e))
        maps = prompt_maps((z, e, e), (1.0, 2.0, 2.0), torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([1]), None, None)
        out = head.decode(features, maps[None], torch.rand(1, 1, z, 2 * e, 2 * e), torch.zeros(1, 1, z, 2 * e, 2 * e),
                          pool)
        assert out.shape == (1, 1, z, 2 * e, 2 * e) and torch.isfinite(out).all()


def test_prompt_maps_put_clicks_and_boxes_where_they_were_given():
    shape = (6, 8, 8)
    maps = prompt_maps(shape, (2.0, 2.0, 2.0), torch.tensor([[2.0, 3.0, 4.0], [5.0, 7.0, 1.0]]), torch.tensor([1, 0]),
                       torch.tensor([1.0, 1.0, 1.0, 3.0, 4.0, 5.0]), None)
    assert maps.shape == (PROMPT_CHANNELS, *shape)
    positive, negative, box, previous = maps[:4]
    assert positive[2, 3, 4] == 1 and positive.argmax() == 2 * 64 + 3 * 8 + 4
    assert negative[5, 7, 1] == 1 and negative[2, 3, 4] < 0.05  # 5.8 cells away, sigma 2 cells
    assert box[1:4, 1:5, 1:6].eq(1).all() and box.sum() == 3 * 4 * 5
    assert previous.eq(0).all()
    empty = prompt_maps(shape, (2.0, 2.0, 2.0), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long),
                        torch.tensor([0.0, 0.0, 0.0, 5.0, 7.0, 7.0]), torch.full(shape, 8.0))
    assert empty[0].eq(0).all() and empty[3].gt(0.9).all()


def test_the_slice_grid_maps_voxels_onto_the_token_grid_and_back():
    grid = SliceGrid((4, 30, 60), (3.0, 0.5, 0.5), 64, (32, 64))  # 60 columns -> 64 pixels -> 16 tokens
    assert grid.cell_mm == pytest.approx((3.0, 4 * 0.5 * 30 / 32, 4 * 0.5 * 60 / 64))
    assert grid.slice_pool == 1  # 3 mm slices against ~1.9 mm cells: never pooled
    corner = grid.to_tokens([[0, 0, 0], [3, 29, 59]])
    assert corner[0].tolist() == pytest.approx([0, (0.5 * 32 / 30) / 4 - 0.5, (0.5 * 64 / 60) / 4 - 0.5])
    assert corner[1, 2].item() == pytest.approx(15.5 - 0.5 * 64 / 60 / 4, abs=1e-4)
    ramp = torch.arange(60, dtype=torch.float32).expand(4, 30, 60)
    back = grid.to_voxels(grid.to_fine(ramp))
    assert back.shape == (4, 30, 60)
    assert (back - ramp)[:, :, 1:-1].abs().max() < 0.6  # within a voxel of the original (edges: half a cell)
    assert grid.to_fine(ramp).shape == (4, 32, 32) and grid.to_fine(ramp)[:, 16:].eq(0).all()  # padded rows


def test_litemedsam_3d_is_listed_and_its_head_is_a_small_part_of_it():
    assert set(PROMPTABLE_3D) <= set(list_models("promptable-3d"))
    assert "litemedsam-3d" not in list_models("promptable")
    model = build_model("litemedsam-3d-tiny")
    assert isinstance(model, Promptable3D) and model.head_fraction() < 0.10


def test_a_checkpoint_of_another_model_does_not_load_into_a_3d_model(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file(build_model("litemedsam-tiny").state_dict(), str(path))
    with pytest.raises(CheckpointError, match="does not fit model 'litemedsam-3d-tiny'"):
        build_model("litemedsam-3d-tiny", checkpoint=path)


def test_the_shipped_3d_head_loads_with_its_provenance(real_weights):
    _, path = PROMPTABLE_3D["litemedsam-3d"]
    assert path.stat().st_size < 20e6
    provenance = json.loads(provenance_path(path).read_text())
    assert {"data", "steps", "seed", "command", "val_dice"} <= set(provenance)
    model = build_model("litemedsam-3d", pretrained=True)
    assert model.head_fraction() < 0.10
    fresh = build_model("litemedsam-3d", pretrained=True, weights="published")
    assert not torch.equal(model.volume_head.project[0].weight, fresh.volume_head.project[0].weight)
