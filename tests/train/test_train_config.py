"""Config: defaults < YAML < --set, type coercion, and errors that name the key and list the valid ones."""

from __future__ import annotations

import pytest

from medseg.errors import InputError
from medseg.train.config import Config, config_from_dict, config_to_dict, load_config


def test_defaults_without_file_or_overrides():
    config = load_config()
    assert config == Config()
    assert config.model.name == "litemedsam" and config.model.trainable == "decoder"
    assert config.train.objective == "supervised" and config.train.val_every == 1
    assert config.data.image_size is None and config.data.num_workers == 0


def test_yaml_overrides_defaults_and_set_overrides_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1.0e-3\n  betas: [0.8, 0.9]\ntrain:\n  epochs: 7\n  amp: off\n")
    config = load_config(path, ["optim.lr=3e-4", "train.batch_size=5"])
    assert config.optim.lr == 3e-4  # --set wins over the YAML
    assert config.train.epochs == 7 and config.train.batch_size == 5
    assert config.optim.betas == [0.8, 0.9]
    assert config.train.amp == "off"  # YAML's unquoted off (a boolean) still means "off" here
    assert config.optim.weight_decay == Config().optim.weight_decay  # untouched default


@pytest.mark.parametrize("override, attribute, expected", [
    ("model.pretrained=false", ("model", "pretrained"), False),
    ("model.pretrained=Yes", ("model", "pretrained"), True),
    ("train.epochs=12", ("train", "epochs"), 12),
    ("optim.lr=1e-4", ("optim", "lr"), 1e-4),
    ("optim.lr=2", ("optim", "lr"), 2.0),
    ("optim.grad_clip=none", ("optim", "grad_clip"), None),
    ("data.limit=null", ("data", "limit"), None),
    ("data.root=/data/a=b", ("data", "root"), "/data/a=b"),
    ("optim.betas=[0.5, 0.6]", ("optim", "betas"), [0.5, 0.6]),
    ("optim.betas=0.5,0.6", ("optim", "betas"), [0.5, 0.6]),
    ("train.seed=0", ("train", "seed"), 0),
])
def test_set_values_are_coerced_to_the_field_type(override, attribute, expected):
    value = getattr(getattr(load_config(None, [override]), attribute[0]), attribute[1])
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=1", ["'optim.lrr'", "lr, weight_decay", "accumulate"]),
    ("optimizer.lr=1", ["'optimizer'", "data, model, optim, train"]),
    ("train.epochs=1.5", ["'train.epochs'", "1.5"]),
    ("model.pretrained=maybe", ["'model.pretrained'", "maybe"]),
    ("model.trainable=head", ["'model.trainable'", "decoder", "all"]),
    ("train.amp=fp8", ["'train.amp'", "bf16"]),
    ("train.batch_size=0", ["'train.batch_size'", "> 0"]),
    ("lr=1", ["section.key=value"]),
    ("optim.lr", ["section.key=value"]),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(InputError) as info:
        load_config(None, [override])
    for word in words:
        assert word in str(info.value)


def test_unknown_yaml_key_names_file_key_and_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  root: x\n  rooot: y\n")
    with pytest.raises(InputError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "'data.rooot'" in message and "train_split" in message


@pytest.mark.parametrize("text, words", [("data: [1, 2]\n", ["'data'", "mapping"]),
                                         ("- a\n- b\n", ["mapping"]),
                                         ("data: {root: [unclosed\n", ["YAML"])])
def test_malformed_yaml_is_an_input_error(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_config(path)
    assert all(w in str(info.value) for w in words)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_dict_round_trip():
    config = load_config(None, ["optim.lr=0.5", "data.root=somewhere", "optim.betas=[0.1, 0.2]"])
    data = config_to_dict(config)
    assert data["optim"]["lr"] == 0.5 and data["data"]["root"] == "somewhere"
    assert config_from_dict(data) == config
    assert config_from_dict({"train": {"epochs": "3"}}).train.epochs == 3
