"""Iterative click training (SAM-style chains): the prompts each round receives, training through
train() on both promptable objectives, validation per round, exact resume with random clicks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.train import embeddings

from medseg.errors import InputError
from medseg.train import load_config, train
from medseg.train.interactive import chain_dice, chain_logits, chain_loss, training_chain, true_iou
from medseg.train.objectives import SupervisedObjective

S = 32


class RecordingDecoder:
    """decode(boxes, points, masks): records the prompts, predicts a fixed square of logits."""

    def __init__(self, square: tuple[int, int, int, int]) -> None:
        self.calls: list[tuple] = []
        self.square = square

    def __call__(self, boxes, points, masks):
        self.calls.append((boxes, points, masks))
        logits = torch.full((2, 1, S, S), -5.0)
        y0, y1, x0, x1 = self.square
        logits[:, :, y0:y1, x0:x1] = 5.0
        return logits, torch.zeros(2, 1)


def _targets() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.zeros(2, 1, S, S)
    target[:, :, 8:20, 8:20] = 1
    box = torch.tensor([[8.0, 8.0, 19.0, 19.0]] * 2)
    return box, target


def test_a_box_chain_adds_one_corrective_click_per_round_and_feeds_back_the_logits():
    box, target = _targets()
    decode = RecordingDecoder((8, 20, 8, 14))  # misses the right part of the object
    chain = chain_logits(decode, box, target, rounds=2, first="box", rng=None)
    assert len(chain) == 3 and all(c.shape == (2, 1, S, S) for c in chain)
    first, second, third = decode.calls
    assert torch.equal(first[0], box) and first[1] is None and first[2] is None
    points, labels = second[1]
    assert points.shape == (2, 1, 2) and labels.tolist() == [[1], [1]]  # positive: a missed region
    x, y = points[0, 0].tolist()
    assert 14 <= x < 20 and 8 <= y < 20  # inside the missed part
    assert torch.equal(second[2], chain[0]) and torch.equal(second[0], box)  # logits back as the mask prompt
    assert third[1][0].shape == (2, 2, 2)  # clicks accumulate


def test_a_point_chain_starts_with_one_positive_click_and_no_box():
    box, target = _targets()
    decode = RecordingDecoder((0, 32, 0, 32))  # everything: the error is a false positive
    chain_logits(decode, box, target, rounds=1, first="point", rng=np.random.default_rng(0))
    (b0, (p0, l0), m0), (b1, (p1, l1), m1) = decode.calls
    assert b0 is None and m0 is None and l0.tolist() == [[1], [1]]
    x, y = p0[0, 0].tolist()
    assert 8 <= x < 20 and 8 <= y < 20
    assert l1[:, 1].tolist() == [0, 0]  # then a negative click on the false region
    with pytest.raises(ValueError, match="first prompt"):
        chain_logits(decode, box, target, 1, "mixed", None)


def test_chain_dice_scores_every_round_and_mixed_training_draws_box_or_point():
    box, target = _targets()
    dice = chain_dice(RecordingDecoder((8, 20, 8, 20)), box, target, rounds=2, first="box")
    assert dice.shape == (2, 3) and torch.allclose(dice, torch.ones(2, 3))  # perfect: nothing to click
    kinds = set()
    for seed in range(8):
        decode = RecordingDecoder((8, 20, 8, 20))
        training_chain(decode, box, target, 0, "mixed", np.random.default_rng(seed))
        kinds.add("box" if decode.calls[0][0] is not None else "point")
    assert kinds == {"box", "point"}


class MultimaskDecoder(RecordingDecoder):
    """Also answers ``multimask=True`` with 3 candidates: a quarter, the square itself, everything."""

    def __call__(self, boxes, points, masks, multimask=False):
        logits, iou = super().__call__(boxes, points, masks)
        if not multimask:
            return logits, torch.full((2, 1), 0.5)
        full = torch.full_like(logits, 5.0)
        quarter = torch.full_like(logits, -5.0)
        quarter[:, :, 8:14, 8:14] = 5.0
        return torch.cat([quarter, logits, full], 1), torch.full((2, 3), 0.5)


def test_true_iou_of_candidates_against_the_target():
    _, target = _targets()
    candidates = MultimaskDecoder((8, 20, 8, 20))(None, None, None, multimask=True)[0]
    assert true_iou(candidates, target)[0].tolist() == pytest.approx([36 / 144, 1.0, 144 / 1024])
    assert true_iou(torch.full((1, 1, 4, 4), -1.0), torch.zeros(1, 1, 4, 4)).item() == 1.0  # both empty


def test_multimask_training_adds_the_best_candidates_loss_and_the_iou_head_loss():
    box, target = _targets()
    cfg = load_config(None, ["train.multimask=true", "train.first_prompt=point", "train.click_rounds=1"]).train
    from monai.losses import DiceLoss

    dice_loss = DiceLoss(sigmoid=True)
    decode = MultimaskDecoder((8, 20, 8, 20))
    loss, parts = chain_loss(decode, box, target, cfg, dice_loss, np.random.default_rng(0))
    assert parts["multimask_loss"] < 0.05  # the best candidate is the square: near-zero loss
    # predicted 0.5 against true IoUs 1, 1 (chain rounds) and 0.25, 1, 0.14 (candidates)
    chain_iou = 0.25
    multi = np.mean([(0.5 - v) ** 2 for v in (36 / 144, 1.0, 144 / 1024)])
    assert parts["iou_loss"].item() == pytest.approx((chain_iou + multi) / 2, rel=1e-4)
    assert decode.calls[-1][0] is None and decode.calls[-1][1][0].shape == (2, 1, 2)  # the lone first click
    box_cfg = load_config(None, ["train.multimask=true", "train.first_prompt=box"]).train
    _, box_parts = chain_loss(MultimaskDecoder((8, 20, 8, 20)), box, target, box_cfg, dice_loss,
                              np.random.default_rng(0))
    assert "multimask_loss" not in box_parts and "iou_loss" in box_parts  # a box chain trains the head only


@pytest.mark.parametrize("objective", ["supervised", "supervised_cached"])
def test_click_rounds_train_through_the_loop_and_validate_per_round(tiny_config, objective, tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "DEFAULT_CACHE_DIR", Path(str(tmp_path / "cache")))
    config = tiny_config(train__objective=objective, train__click_rounds=2, train__first_prompt="mixed",
                         train__multimask=True)
    result = train(config, tmp_path / "run")
    losses = [s["loss"] for s in result["steps"]]
    assert losses and all(np.isfinite(losses))
    if objective == "supervised":  # the per-round figures validation reports
        from medseg.models import build_model
        from medseg.train import ddp
        from medseg.train.loop import _build
        from medseg.train.objectives import RunContext

        model, resolved = _build(config)
        obj = SupervisedObjective(resolved)
        run = RunContext(model, torch.device("cpu"), ddp.from_env(), tmp_path / "cache", progress=False)
        _, val = obj.make_datasets(run)
        model = build_model("litemedsam-tiny", checkpoint=tmp_path / "run" / "best.safetensors").eval()
        scores = obj.validate(model, torch.utils.data.DataLoader(val, batch_size=2))
        keys = {f"{k}_round{r}_dice" for k in ("box", "point") for r in range(3)}
        assert keys <= set(scores) and all(0 <= scores[k] <= 1 for k in keys)
        assert scores["dice"] == pytest.approx(np.mean([scores[k] for k in keys]))


@pytest.mark.slow
def test_click_training_resumes_exactly(tiny_config, tmp_path):
    extra = dict(train__epochs=3, train__click_rounds=2, train__first_prompt="mixed", data__box_jitter=0.1)
    whole = train(tiny_config(**extra), tmp_path / "whole")
    train(tiny_config(**extra), tmp_path / "split", stop_after=1)
    second = train(load_config(tmp_path / "split" / "config.yaml"), tmp_path / "split", resume=True)
    assert [s["loss"] for s in second["steps"]] == [s["loss"] for s in whole["steps"]]


def test_bad_click_settings_are_named():
    with pytest.raises(InputError, match="train.first_prompt"):
        load_config(None, ["train.first_prompt=scribble"])
    with pytest.raises(InputError, match="train.click_rounds"):
        load_config(None, ["train.click_rounds=-1"])
