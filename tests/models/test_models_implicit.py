"""The implicit decoder (I-MedSAM): it starts as the upsampling decoder, answers at any point and any
grid, reloads from a checkpoint, learns detail the 4E x 4E logits cannot hold from sampled points,
and refuses an ONNX export it would lose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.models import build_model
from medseg.models.implicit import add_implicit_decoder
from medseg.models.sam import pixel_centres
from medseg.train.interactive import refinement_loss, uncertain_points


def model_and_inputs(name="litemedsam-tiny"):
    torch.manual_seed(0)
    model = build_model(name).eval()
    s = model.image_size
    return model, torch.rand(2, 3, s, s), torch.tensor([[4.0, 6.0, s * 0.6, s * 0.7], [s * 0.2, s * 0.1, s - 3.0, s - 5.0]])


@pytest.mark.parametrize("name", ["litemedsam-tiny", "hr-test"])
def test_a_fresh_implicit_decoder_gives_the_upsampling_decoders_logits_at_every_point(name):
    model, images, boxes = model_and_inputs(name)
    with torch.no_grad():
        before, _ = model(images, boxes=boxes)
        add_implicit_decoder(model)
        after, _ = model(images, boxes=boxes)
        embedding, features = model.encode_features(images)
        coarse, _ = model.decode(embedding, boxes, features=features, refine=False)
        twice, _ = model.decode(embedding, boxes, features=features, at=pixel_centres(2 * model.image_size) / 2)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(coarse, before)
    assert twice.shape == (2, 1, 4 * model.image_size ** 2)  # a 2x grid: four times the points


def test_the_implicit_decoder_reloads_from_a_checkpoint(tmp_path):
    from safetensors.torch import save_file

    model, images, boxes = model_and_inputs()
    add_implicit_decoder(model)
    with torch.no_grad():
        for p in model.mask_decoder.implicit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "implicit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = build_model("litemedsam-tiny", checkpoint=path).eval()
    assert loaded.has_implicit_decoder
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, boxes=boxes)[0], model(images, boxes=boxes)[0])


def test_uncertain_points_gather_where_the_coarse_logits_are_near_zero():
    size = 64
    coarse = torch.full((1, 1, size, size), 8.0)
    coarse[..., :, 24:40] = 0.0  # an uncertain vertical band, a quarter of the frame
    points = uncertain_points(coarse, np.random.default_rng(0), count=400)
    assert points.shape == (1, 400, 2) and points.min() >= 0 and points.max() <= size
    in_band = ((points[0, :, 0] > 24) & (points[0, :, 0] < 40)).float().mean()
    # every candidate in the band is kept (~3 x 300 x 1/4 of them) and a quarter of the uniform 100:
    # ~0.62 of the points, where uniform sampling puts 0.25
    assert in_band > 0.5


def test_trained_on_sampled_points_the_implicit_decoder_draws_a_line_finer_than_its_input():
    model, images, boxes = model_and_inputs()
    add_implicit_decoder(model)
    s = model.image_size
    target = torch.zeros(2, 1, s, s)
    target[..., :, s // 2] = 1.0  # one-pixel lines in the S x S frame
    with torch.no_grad():
        embedding, features = model.encode_features(images)
    optimizer = torch.optim.Adam(model.mask_decoder.implicit.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)

    def loss():
        coarse, _ = model.decode(embedding, boxes, refine=False)
        at = lambda points: model.decode(embedding, boxes, at=points)[0]  # noqa: E731
        return refinement_loss(at, coarse, target, rng)

    first = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert value.item() < 0.5 * first
    with torch.no_grad():
        fine, _ = model.decode(embedding, boxes)
    hit = (fine[:, 0, :, s // 2] > 0).float().mean()
    assert hit > 0.5 and (fine[:, 0] > 0).float().mean() < 0.2  # the line, not the whole frame


def test_an_implicit_decoder_is_not_exported_silently(tmp_path):
    pytest.importorskip("onnx")
    from medseg.engines.export import export_model

    model, _, _ = model_and_inputs()
    add_implicit_decoder(model)
    with pytest.raises(InputError, match="implicit"):
        export_model(model, tmp_path / "out", "litemedsam-tiny")


def test_the_predictor_decodes_an_implicit_model_at_the_images_own_pixels_and_at_any_size():
    from medseg.infer import Predictor

    model, _, _ = model_and_inputs()
    image = (np.random.default_rng(0).random((90, 150)) * 255).astype(np.uint8)
    plain = Predictor(model, device="cpu")
    plain.set_image(image)
    expected = plain.predict(box=np.array([10, 20, 120, 70]))
    add_implicit_decoder(model)
    predictor = Predictor(model, device="cpu")
    predictor.set_image(image)
    fresh = predictor.predict(box=np.array([10, 20, 120, 70]))
    assert fresh.masks.shape == (1, 1, 90, 150)
    # a fresh implicit decoder samples the upsampling decoder's logits where bilinear resizing does
    assert (fresh.masks != expected.masks).mean() < 0.002
    big = predictor.predict(box=np.array([10, 20, 120, 70]), output_hw=(180, 300))
    assert big.masks.shape == (1, 1, 180, 300)
    with pytest.raises(InputError, match="output_hw"):
        predictor.predict(box=np.array([10, 20, 120, 70]), output_hw=(0, 5))
