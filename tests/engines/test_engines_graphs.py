"""The exported graphs, as torch modules, compute what the model computes."""

from __future__ import annotations

import numpy as np
import torch

from medseg.engines.graphs import EncoderGraph, PromptDecoderGraph, pack_prompts


def _prompts(model):
    side = 4 * model.prompt_encoder.embedding_size[0]
    boxes = torch.tensor([[5.0, 6, 40, 50], [10, 3, 60, 30]])
    points = (torch.tensor([[[20.0, 20], [3, 4]], [[30, 10], [50, 50]]]), torch.tensor([[1, 0], [0, 1]]))
    masks = torch.randn(2, 1, side, side)
    return {"box": (boxes, None, None), "points": (None, points, None), "box+points+mask": (boxes, points, masks),
            "mask": (None, None, masks)}


def test_the_decoder_graph_equals_decode_for_every_kind_of_prompt(tiny):
    _, model = tiny
    torch.manual_seed(1)
    with torch.no_grad():
        image = torch.rand(1, 3, model.image_size, model.image_size)
        embedding, features = model.encode_features(image)
        graph = PromptDecoderGraph(model)
        _, *extra = EncoderGraph(model)(image)  # the fusion head's projections of the maps, made once per image
        for what, (boxes, points, masks) in _prompts(model).items():
            coords, labels = pack_prompts(2, boxes, points)
            side = 4 * model.prompt_encoder.embedding_size[0]
            mask = torch.zeros(2, 1, side, side) if masks is None else masks
            has = torch.tensor([0.0 if masks is None else 1.0])
            logits, iou = graph(embedding, torch.from_numpy(coords), torch.from_numpy(labels), mask, has, *extra)
            assert logits.shape[:2] == (2, 4) and iou.shape == (2, 4)
            for multimask, keep in ((False, slice(0, 1)), (True, slice(1, None))):
                ref, ref_iou = model.decode(embedding, boxes, points, masks, multimask, features)
                low = torch.nn.functional.interpolate(logits[:, keep], size=ref.shape[-2:], mode="bilinear",
                                                      align_corners=False)
                torch.testing.assert_close(low, ref, atol=1e-5, rtol=1e-5, msg=what)
                torch.testing.assert_close(iou[:, keep], ref_iou, atol=1e-5, rtol=1e-5, msg=what)


def test_pack_prompts_orders_clicks_padding_and_box_corners_as_the_prompt_encoder():
    boxes = torch.tensor([[1.0, 2, 3, 4]])
    points = (torch.tensor([[[5.0, 6]]]), torch.tensor([[0]]))
    coords, labels = pack_prompts(1, boxes, points)
    assert coords.tolist() == [[[5, 6], [1, 2], [3, 4]]] and labels.tolist() == [[0, 2, 3]]
    coords, labels = pack_prompts(1, None, points)
    assert labels.tolist() == [[0, -1]]  # a padding point after clicks when there is no box
    coords, labels = pack_prompts(3, None, None)
    assert coords.shape == (3, 0, 2) and labels.shape == (3, 0) and coords.dtype == np.float32


def test_the_encoder_graph_returns_the_fusion_maps_only_for_a_fusion_head(tiny):
    name, model = tiny
    names = EncoderGraph(model).output_names()
    assert names == (["embedding", "stride4", "stride8"] if name == "hr-test" else ["embedding"])
    assert len(EncoderGraph(model)(torch.rand(2, 3, model.image_size, model.image_size))) == len(names)
