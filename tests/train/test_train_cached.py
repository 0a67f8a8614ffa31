"""Embedding cache and the "supervised_cached" objective on the tiny random model (64x64 input):
the cache is built once, reused, invalidated by a changed image and equals the predictor's
encoding; the objective trains through train(), its loss goes down and it resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medseg.train.cached  # noqa: F401 - registers "supervised_cached"
from medseg.errors import InputError
from medseg.data.datasets import dataset_cases
from medseg.eval.evaluate import evaluate_case
from medseg.infer import Predictor
from medseg.data.preprocess import prepare_image
from medseg.models import build_model
from medseg.train import load_config, train
from medseg.train import embeddings
from medseg.train.embeddings import CachedPredictor, build_embeddings, load_plane

TINY = "litemedsam-tiny"


def write_squares(root: Path, n_train: int = 8, n_val: int = 2, seed: int = 0) -> Path:
    """Grey pictures 40 high x 48 wide, one bright square each (0/255 masks), train/val split."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stems = [f"sq{i}" for i in range(n_train + n_val)]
    for stem in stems:
        side = int(rng.integers(8, 16))
        y, x = int(rng.integers(0, 40 - side)), int(rng.integers(0, 48 - side))
        mask = np.zeros((40, 48), dtype=np.uint8)
        mask[y:y + side, x:x + side] = 255
        image = rng.integers(0, 60, (40, 48)).astype(np.uint8)
        image[mask > 0] = rng.integers(180, 255, int((mask > 0).sum()))
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    (root / "splits.json").write_text(json.dumps({"train": stems[:n_train], "val": stems[n_train:],
                                                  "test": stems[n_train:]}))
    return root


@pytest.fixture
def squares(tmp_path) -> Path:
    return write_squares(tmp_path / "squares")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch) -> Path:
    """Embedding caches of these tests go to tmp_path, never to ~/.cache."""
    folder = tmp_path / "embedding_cache"
    monkeypatch.setattr(embeddings, "DEFAULT_CACHE_DIR", Path(str(folder)))
    return folder


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(TINY)


class Counter:
    """Counts images through the encoder (a forward hook)."""

    def __init__(self, model) -> None:
        self.images = 0
        model.image_encoder.register_forward_hook(lambda m, args, out: self._add(out))

    def _add(self, out) -> None:
        self.images += out.shape[0]


def config(root: Path, **extra):
    values = {"data.root": str(root), "data.min_object_pixels": 4, "data.box_jitter": 0.1, "model.name": TINY,
              "model.pretrained": False, "optim.lr": 3e-3, "optim.warmup_steps": 1, "train.epochs": 2,
              "train.batch_size": 2, "train.device": "cpu", "train.amp": "off", "train.progress": False,
              "train.objective": "supervised_cached"}
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return load_config(None, [f"{k}={v}" for k, v in values.items()])


def test_an_image_embedded_for_another_split_or_subset_is_copied_not_encoded(squares, _cache_dir):
    model = tiny_model()
    counter = Counter(model)
    cases = dataset_cases(squares, "train")
    first = build_embeddings(model, cases[:5], label="squares-some", shard_size=3, progress=False)
    assert counter.images == 5
    more = build_embeddings(model, cases, label="squares-all", shard_size=4, progress=False)
    assert more.folder != first.folder
    assert counter.images == len(cases) and (more.computed, more.reused) == (len(cases) - 5, 5)
    for case in cases[:5]:
        assert torch.equal(more.embedding(case.stem), first.embedding(case.stem))
    other = tiny_model(seed=1)  # another encoder: nothing to copy
    counted = Counter(other)
    assert build_embeddings(other, cases[:2], label="squares-some", progress=False).computed == 2
    assert counted.images == 2


def test_cache_is_built_once_reused_and_invalidated_by_a_changed_image(squares, _cache_dir):
    model = tiny_model()
    counter = Counter(model)
    cases = dataset_cases(squares, "train")
    store = build_embeddings(model, cases, label="squares-train", shard_size=3, progress=False)
    assert counter.images == len(cases) and (store.computed, store.reused) == (len(cases), 0)
    again = build_embeddings(model, cases, label="squares-train", shard_size=3, progress=False)
    assert counter.images == len(cases) and (again.computed, again.reused) == (0, len(cases))
    assert again.folder == store.folder and again.stems == [c.stem for c in cases]
    manifest = json.loads((store.folder / "manifest.json").read_text())
    assert manifest["embedding_shape"] == [256, 16, 16]
    assert {tuple(i["original_hw"]) for i in manifest["items"]} == {(40, 48)}
    assert {tuple(i["resized_hw"]) for i in manifest["items"]} == {(53, 64)}

    changed = cases[4]  # in the second shard of three images
    old = store.embedding(changed.stem).clone()
    picture = np.asarray(Image.open(changed.image_path)).copy()
    picture[:5] = 255
    Image.fromarray(picture).save(changed.image_path)
    after = build_embeddings(model, cases, label="squares-train", shard_size=3, progress=False)
    # the shard is rewritten; only the changed image is encoded, its two shard-mates are copied
    assert (after.computed, after.reused) == (1, len(cases) - 1) and counter.images == len(cases) + 1
    assert not torch.equal(after.embedding(changed.stem), old)
    assert len(list(after.folder.glob("shard-*.safetensors"))) == 3  # the stale shard is gone
    assert not list(_cache_dir.rglob("*.tmp"))

    other = tiny_model()
    with torch.no_grad():
        next(other.image_encoder.parameters()).mul_(1.5)  # another encoder: another cache
    counter2 = Counter(other)
    fresh = build_embeddings(other, cases, label="squares-train", shard_size=3, progress=False)
    assert fresh.computed == len(cases) and counter2.images == len(cases) and fresh.folder != after.folder


def test_cached_embeddings_equal_the_encoder_on_the_prepared_image(squares):
    model = tiny_model()
    cases = dataset_cases(squares, "val")
    store = build_embeddings(model, cases, label="squares-val", progress=False)
    for case in cases:
        x, record = prepare_image(load_plane(case.image_path), model.image_size)
        with torch.no_grad():
            expected = model.encode(x)[0]
        assert torch.equal(store.embedding(case.stem), expected)
        assert store.resized_hw(case.stem) == record.resized_hw

    # a predictor on the store gives evaluate() the same rows as the plain predictor, without encoding
    cached, plain = CachedPredictor(model, store), Predictor(model, device="cpu")
    counter = Counter(model)
    rows = [evaluate_case(cached, c)[0][0] for c in cases]
    assert counter.images == 0 and cached.hits == len(cases)
    for row, case in zip(rows, cases):
        assert row["dice"] == pytest.approx(evaluate_case(plain, case)[0][0]["dice"], abs=1e-6)


def test_cached_objective_trains_and_its_loss_goes_down(squares, tmp_path):
    result = train(config(squares, train__epochs=4), tmp_path / "run")
    losses = [h["train_loss"] for h in result["history"] if h["epoch"] > 0]
    assert losses[-1] < losses[0] and all(np.isfinite(losses))
    assert all(0 <= h["val_dice"] <= 1 for h in result["history"])
    best = tmp_path / "run" / "best.safetensors"
    start, tuned = tiny_model(), build_model(TINY, checkpoint=tmp_path / "run" / "latest.safetensors")
    before, after = start.state_dict(), tuned.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("image_encoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("mask_decoder."))

    from medseg.cli import main  # the full-model checkpoint is what `medseg evaluate --checkpoint` takes

    report = tmp_path / "report.json"
    assert main(["evaluate", str(squares), "--split", "val", "--model", TINY, "--checkpoint", str(best),
                 "--json", str(report), "--figure", str(tmp_path / "report.png"), "--no-progress"]) == 0
    assert json.loads(report.read_text())["summary"]["n_cases"] == 2


def test_cached_objective_resumes_exactly(squares, tmp_path):
    whole = train(config(squares, train__epochs=3), tmp_path / "whole")
    train(config(squares, train__epochs=3), tmp_path / "parts", stop_after=1)
    resumed = train(config(squares, train__epochs=3), tmp_path / "parts", resume=True)
    assert [s["loss"] for s in resumed["steps"]] == pytest.approx([s["loss"] for s in whole["steps"]], abs=1e-6)
    assert resumed["best_dice"] == pytest.approx(whole["best_dice"], abs=1e-6)


def test_cached_objective_needs_a_frozen_encoder(squares, tmp_path):
    with pytest.raises(InputError, match="frozen image encoder"):
        train(config(squares, model__trainable="all"), tmp_path / "run")


def test_the_shipped_config_loads_and_makes_the_objective():
    from medseg.train.objectives import make_objective

    path = Path(__file__).resolve().parents[2] / "configs" / "finetune_cached_kvasir.yaml"
    loaded = load_config(path)
    assert loaded.train.objective == "supervised_cached" and loaded.model.trainable == "decoder"
    assert type(make_objective(loaded)).__name__ == "CachedSupervisedObjective"


def write_tasks(tmp_path: Path) -> Path:
    """A task file of two split datasets and one without a split file (trains only)."""
    write_squares(tmp_path / "a", n_train=4, n_val=2, seed=1)
    write_squares(tmp_path / "b", n_train=3, n_val=1, seed=2)
    (write_squares(tmp_path / "c", n_train=2, n_val=0, seed=3) / "splits.json").unlink()
    path = tmp_path / "tasks.yaml"
    path.write_text("a: {root: a, modality: CT}\nb: {root: b, modality: MR}\nc: {root: c, modality: X-ray}\n")
    return path


def test_data_tasks_trains_on_the_objects_of_every_task_and_validates_on_the_split_ones(tmp_path):
    from medseg.train import ddp
    from medseg.train.loop import _build
    from medseg.train.objectives import RunContext, make_objective

    tasks = write_tasks(tmp_path)
    cfg = config(tmp_path, data__root="null", data__tasks=str(tasks))
    model, resolved = _build(cfg)
    objective = make_objective(resolved)
    assert [Path(r).name for r, _ in objective.sources()] == ["a", "b", "c"]
    run = RunContext(model, torch.device("cpu"), ddp.from_env(), tmp_path / "cache", progress=False)
    train_set, val_set = objective.make_datasets(run)
    assert len(train_set) == 4 + 3 + 2 and len(val_set) == 2 + 1  # c has no split: never validated on
    chosen = make_objective(config(tmp_path, data__root="null", data__tasks=str(tasks), data__task_names="[b]"))
    assert [Path(r).name for r, _ in chosen.sources()] == ["b"]
    result = train(cfg, tmp_path / "run")
    assert all(np.isfinite(s["loss"]) for s in result["steps"])


def test_bad_task_settings_of_the_cached_objective_are_named(tmp_path):
    from medseg.train.objectives import make_objective

    tasks = write_tasks(tmp_path)
    with pytest.raises(InputError, match="exclude each other"):
        make_objective(config(tmp_path / "a", data__tasks=str(tasks))).sources()
    with pytest.raises(InputError, match=r"\['zz'\] not in"):
        make_objective(config(tmp_path, data__root="null", data__tasks=str(tasks), data__task_names="[zz]")).sources()
    with pytest.raises(InputError, match="needs 'data.tasks'"):
        make_objective(config(tmp_path / "a", data__task_names="[a]")).sources()


def test_cap_objects_keeps_at_most_the_cap_per_case_reproducibly():
    from medseg.train.cached import cap_objects

    objects = [(c, np.full((2, 2), i)) for i, c in enumerate([0, 0, 0, 0, 0, 1, 2, 2])]
    kept = cap_objects(objects, 2, seed=0)
    cases = [c for c, _ in kept]
    assert cases.count(0) == 2 and cases.count(1) == 1 and cases.count(2) == 2
    assert [int(m[0, 0]) for _, m in kept] == [int(m[0, 0]) for _, m in cap_objects(objects, 2, seed=0)]
    assert cap_objects(objects, 5, seed=0) == objects


def test_model_weights_must_be_shipped_or_published():
    assert load_config(None, ["model.weights=published"]).model.weights == "published"
    with pytest.raises(InputError, match="model.weights"):
        load_config(None, ["model.weights=latest"])
