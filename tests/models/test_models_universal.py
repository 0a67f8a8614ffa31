"""The universal model: a promptable base plus an automatic head with task/modality prior tokens,
self-prompting and a task table that travels inside the checkpoint."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from medseg.errors import CheckpointError, InputError
from medseg.models import build_model, list_models
from medseg.models.universal import UniversalSegmenter, label_map


def tiny_with_tasks() -> UniversalSegmenter:
    torch.manual_seed(0)
    model = build_model("universal-tiny")
    model.automatic.add_task("polyps", "endoscopy", {255: "polyp"})
    model.automatic.add_task("fundus", "fundus", {1: "disc", 2: "cup"})
    return model


def test_registry_lists_universal_models():
    assert set(list_models("universal")) == {"universal", "universal-hr", "universal-tiny"}
    assert "universal" not in list_models("promptable")


def test_segment_returns_one_query_per_class_of_each_items_task():
    model = tiny_with_tasks()
    logits, coarse, index = model.segment(torch.randn(3, 256, 16, 16), ["fundus", "polyps", "fundus"])
    assert logits.shape == (5, 1, 64, 64) and coarse.shape == (5, 1, 16, 16)
    assert index.tolist() == [[0, 0], [0, 1], [1, 0], [2, 0], [2, 1]]


def test_each_item_is_decoded_independently_of_the_batch():
    model = tiny_with_tasks().eval()
    emb = torch.randn(2, 256, 16, 16)
    together, _, _ = model.segment(emb, ["fundus", "polyps"])
    alone, _, _ = model.segment(emb[1:], ["polyps"])
    torch.testing.assert_close(together[2:], alone, atol=1e-5, rtol=1e-5)


def test_task_and_modality_tokens_change_the_output():
    model = tiny_with_tasks().eval()
    emb = torch.randn(1, 256, 16, 16)
    a = model.segment(emb, ["polyps"])[0]
    with torch.no_grad():
        model.automatic.modality_tokens["m_endoscopy"].add_(1.0)
    assert not torch.allclose(a, model.segment(emb, ["polyps"])[0])


def test_promptable_path_is_the_base_models_and_the_head_starts_from_its_decoder():
    torch.manual_seed(0)
    base = build_model("litemedsam-tiny")
    universal = UniversalSegmenter.from_promptable(base).eval()
    images, boxes = torch.rand(2, 3, 64, 64), torch.tensor([[4.0, 4, 30, 30], [10, 10, 50, 40]])
    torch.testing.assert_close(universal(images, boxes=boxes)[0], base(images, boxes=boxes)[0])
    head = universal.automatic.decoder.state_dict()
    for key, value in base.mask_decoder.state_dict().items():
        assert torch.equal(head[key], value), key
    assert universal.automatic.decoder is not universal.mask_decoder


def test_decoder_query_of_zero_changes_nothing():
    model = build_model("litemedsam-tiny").eval()
    dec, pe = model.mask_decoder, model.prompt_encoder.get_dense_pe()
    emb, sparse, dense = torch.randn(2, 256, 16, 16), torch.randn(2, 3, 256), torch.randn(2, 256, 16, 16)
    plain = dec(emb, pe, sparse, dense)[0]
    torch.testing.assert_close(dec(emb, pe, sparse, dense, query=torch.zeros(2, 256))[0], plain)
    assert not torch.allclose(dec(emb, pe, sparse, dense, query=torch.ones(2, 256))[0], plain)


def test_checkpoint_round_trip_keeps_tasks_and_outputs(tmp_path):
    model = tiny_with_tasks().eval()
    path = tmp_path / "u.safetensors"
    save_file(model.state_dict(), str(path))
    again = build_model("universal-tiny", checkpoint=path)
    assert again.tasks == model.tasks
    emb = torch.randn(1, 256, 16, 16)
    torch.testing.assert_close(again.segment(emb, ["fundus"])[0], model.segment(emb, ["fundus"])[0])


def test_a_promptable_checkpoint_is_not_a_universal_one(tmp_path):
    path = tmp_path / "p.safetensors"
    save_file(build_model("litemedsam-tiny").state_dict(), str(path))
    with pytest.raises(CheckpointError, match="not a checkpoint of a universal model"):
        build_model("universal-tiny", checkpoint=path)


def test_task_errors():
    model = tiny_with_tasks()
    with pytest.raises(InputError, match="already known"):
        model.automatic.add_task("polyps", "endoscopy", {1: "x"})
    with pytest.raises(InputError, match="ids > 0"):
        model.automatic.add_task("bg", "CT", {0: "background"})
    with pytest.raises(InputError, match="unknown task 'liver'.*polyps, fundus"):
        model.segment(torch.randn(1, 256, 16, 16), ["liver"])


def test_freeze_tasks_freezes_their_tokens_only():
    model = tiny_with_tasks()
    model.automatic.add_task("ct", "CT", {1: "liver"})
    frozen = model.automatic.freeze_tasks(["polyps", "fundus"])
    assert frozen > 0
    tokens = model.automatic.class_tokens
    assert not tokens["t0"].requires_grad and not tokens["t1"].requires_grad and tokens["t2"].requires_grad
    assert model.automatic.modality_tokens["m_ct"].requires_grad


def test_label_map_takes_the_best_class_above_zero():
    logits = torch.tensor([[[2.0, -1.0, 1.0]], [[1.0, -2.0, 3.0]]])  # (K=2, 1, 3)
    assert label_map(logits, [1, 2]).tolist() == [[1, 0, 2]]


def test_universal_hr_decodes_from_the_embedding_alone():
    model = build_model("universal-hr")
    model.automatic.add_task("a", "x", {1: "y"})
    assert model.automatic.decoder.fusion is None and model.uses_features  # the promptable path keeps it
    logits, coarse, _ = model.segment(torch.randn(1, 256, 64, 64), ["a"])
    assert logits.shape == (1, 1, 1024, 1024) and coarse.shape == (1, 1, 64, 64)


def test_the_self_prompt_enters_through_its_gate():
    model = tiny_with_tasks().eval()
    head, emb = model.automatic, torch.randn(1, 256, 16, 16)
    before = model.segment(emb, ["polyps"])[0]
    with torch.no_grad():
        head.coarse_features[-1].bias.add_(3.0)  # a different coarse mask ...
    torch.testing.assert_close(model.segment(emb, ["polyps"])[0], before)  # ... ignored while the gate is 0
    with torch.no_grad():
        head.self_prompt_gate.fill_(1.0)
    assert not torch.allclose(model.segment(emb, ["polyps"])[0], before)


def test_the_window_travels_in_the_task_table(tmp_path):
    model = build_model("universal-tiny")
    model.automatic.add_task("ct", "CT", {1: "liver"}, window="CT")
    model.automatic.add_task("slices", "CT", {1: "liver"})
    path = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(path))
    again = build_model("universal-tiny", checkpoint=path)
    assert again.tasks["ct"].window == "CT" and again.tasks["slices"].window is None
    from medseg.infer.automatic import AutoSegmenter

    seg = AutoSegmenter(again, device="cpu")
    assert seg.modality_for("ct") == "CT" and seg.modality_for("slices") is None


def test_a_task_with_a_low_rank_update_learns_its_own_decoder_and_leaves_others_bit_identical(tmp_path):
    model = tiny_with_tasks().eval()
    emb = torch.randn(2, 256, 16, 16)
    before = model.segment(emb, ["polyps", "fundus"])[0]
    model.automatic.add_task("em", "microscopy", {255: "membrane"}, rank=4)
    sets = model.automatic.task_updates.sets
    assert list(sets) == ["t2"] and all(p.requires_grad for p in sets["t2"].parameters())
    start = model.segment(emb[:1], ["em"])[0]
    with torch.no_grad():  # B starts at zero: the update changes nothing until it trains
        for name, p in sets["t2"].named_parameters():
            if name.endswith("__b"):
                p.normal_(0, 0.1)
    trained = model.segment(emb[:1], ["em"])[0]
    assert not torch.allclose(start, trained)
    mixed = model.segment(torch.cat([emb, emb[:1]]), ["polyps", "fundus", "em"])[0]
    assert torch.equal(mixed[:3], before) and torch.allclose(mixed[3:], trained, atol=1e-5)
    assert model.automatic.freeze_tasks(["em"]) > sum(p.numel() for p in sets["t2"].parameters())
    path = tmp_path / "u.safetensors"
    save_file(model.state_dict(), str(path))
    again = build_model("universal-tiny", checkpoint=path).eval()
    assert again.tasks["em"].rank == 4 and again.tasks["polyps"].rank == 0
    assert torch.equal(again.segment(emb[:1], ["em"])[0], trained)


def test_a_table_without_low_rank_tasks_is_written_as_before():
    model = tiny_with_tasks()
    assert b"rank" not in bytes(model.automatic.task_table.tolist())
    with pytest.raises(InputError, match="rank must be >= 0"):
        model.automatic.add_task("x", "CT", {1: "a"}, rank=-1)
