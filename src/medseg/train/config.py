"""Training configuration: dataclasses with defaults, YAML files and ``key=value`` overrides.

Precedence: defaults < YAML file < ``--set section.key=value``. Every value is coerced to the
type of its field (``"1e-4"`` -> 1e-4, ``"true"`` -> True, ``"null"`` -> None, ``"[0.9, 0.99]"``
-> [0.9, 0.99]); an unknown key is an :class:`~medseg.errors.InputError` that names it and lists
the keys valid at that level.

    config = load_config("configs/tiny_smoke.yaml", ["data.root=data/kvasir_seg", "optim.lr=3e-4"])
    config.optim.lr  # 0.0003
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import InputError

TRAINABLE = ("encoder", "decoder", "prompt_decoder", "encoder_frozen", "automatic", "volume_head", "all", "adapters",
             "frequency_adapter", "lora", "conv_branch")
DECODERS = ("sam", "implicit")
AMP_MODES = ("auto", "bf16", "fp16", "off")
PIXEL_LOSSES = ("bce", "focal")
FIRST_PROMPTS = ("box", "point", "mixed")
CHOICES: dict[str, tuple[str, ...]] = {"model.trainable": TRAINABLE, "model.decoder": DECODERS, "train.amp": AMP_MODES,
                                       "train.pixel_loss": PIXEL_LOSSES, "train.first_prompt": FIRST_PROMPTS}
"""The allowed values of the config keys that take one of a few words."""


@dataclass
class DataConfig:
    """Where the cases come from and how items are made (see :mod:`medseg.train.datasets`)."""

    root: str | None = None          # images/ + masks/ (+ splits.json) or imagesTr/ + labelsTr/
    tasks: str | None = None         # instead of root: a task file (medseg.data.tasks); "supervised_cached"
                                     # trains on the objects of all its datasets together
    task_names: list[str] = field(default_factory=list)  # the tasks of data.tasks to use (empty: all)
    max_objects_per_case: int | None = None  # "supervised_cached": keep at most this many objects per image
    train_split: str = "train"
    val_split: str | None = "val"    # None: no validation (then only latest.* is written)
    image_size: int | None = None    # model input side; None = the model's own
    limit: int | None = None         # first N cases of each split (smoke runs)
    val_limit: int | None = None     # first N cases of the val split (validation of big splits stays short)
    num_workers: int = 0
    box_jitter: float = 0.0          # each box side moves by up to this fraction of the box size
    min_object_pixels: int = 20      # smaller components (in the model frame) are not objects
    modality: str | None = None      # "CT" / "MR" intensity window, as the predictor's
    cache: bool = True               # keep prepared frames in memory after first use
    augment: bool = False            # flips, quarter turns, rotation/zoom, intensity (medseg.data.augment);
                                     # objective "volume": 3D rotation, zoom, elastic, intensity (medseg.data.augment3d)
    foreground_ids: list[int] = field(default_factory=list)  # objective "unet": label ids that are foreground (empty: any > 0)
    patches_per_epoch: int = 250     # objective "volume": random patches drawn per epoch
    foreground_fraction: float = 0.33  # objective "volume": share of patches centred on a foreground voxel
    patch_voxels: int | None = None  # objective "volume": voxel budget of the plan (default medseg.data.planning's)
    target_spacing: list[float] | None = None  # objectives "volume", "mae": (Z, Y, X) mm instead of the plan's median
    crop_size: list[int] = field(default_factory=lambda: [48, 64, 64])  # objective "mae": (Z, Y, X) crop


@dataclass
class ModelConfig:
    name: str = "litemedsam"
    pretrained: bool = True
    checkpoint: str | None = None    # start from these weights instead of the published ones
    weights: str = "shipped"         # with pretrained: shipped (medseg's click-trained decoder) | published
    init_encoder: str | None = None  # then replace the image encoder by these weights (a distilled encoder)
    trainable: str = "decoder"       # one of TRAINABLE; adapters / frequency_adapter / lora / conv_branch: the
                                     # encoder frozen, its adapters, low-rank updates or conv branch and the mask
                                     # decoder's heads train (models.peft)
    lora_rank: int = 8               # trainable: lora: the rank of the updates
    decoder: str = "sam"             # sam | implicit: add I-MedSAM's implicit decoder (masks at any resolution)
    activation_checkpointing: bool = False


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0            # linear warm-up, then cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0    # max global gradient norm; None: no clipping
    accumulate: int = 1              # micro-batches per optimizer step
    layer_decay: float | None = None # layer-wise LR decay of a ViT (vit3d): layer l of L gets lr * decay**(L - 1 - l)


@dataclass
class TrainConfig:
    objective: str = "supervised"
    epochs: int = 10
    batch_size: int = 8              # global: split over processes under torchrun
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | cuda:1
    amp: str = "auto"                # auto (bf16/fp16 on CUDA, off on CPU) | bf16 | fp16 | off
    log_every: int = 10              # optimizer steps between progress-bar / TensorBoard updates
    val_every: int = 1               # epochs between validations (the last epoch always validates)
    run_dir: str | None = None
    dice_weight: float = 1.0
    pixel_weight: float = 1.0        # weight of the BCE or focal term
    pixel_loss: str = "bce"          # bce | focal
    focal_gamma: float = 2.0
    progress: bool = True
    steps_per_epoch: int | None = None  # cap an epoch at this many optimizer steps (random subset per epoch)
    validate_start: bool = True      # validate the starting weights as epoch 0 (best.* never falls below them)
    click_rounds: int = 0            # corrective-click rounds per item after the first prompt (SAM-style)
    first_prompt: str = "box"        # box | point | mixed: the first prompt of an interactive item
    multimask: bool = False          # also train a lone click's 3 candidates (best one's loss) and the IoU head
    time_budget_s: float | None = None  # wall-clock budget: after epoch 1, only the epochs that fit (LR schedule re-planned)
    encoder_engine: str = "torch"    # objective "volume_prompts": the engine that computes the cached slice embeddings
    encoder_precision: str = "fp32"  # ... and its precision (e.g. openvino + bf16, as the predictor will run it)
    cache_dir: str | None = None     # embedding cache folder (default ~/.cache/medseg/embeddings; the CLI reads
                                     # $MEDSEG_EMBEDDING_CACHE into it)


@dataclass
class DistillConfig:
    """Objective "distill" (:mod:`medseg.train.distill`): the student's image encoder learns the teacher's embedding."""

    teacher: str = "litemedsam"      # a registered promptable model: its published weights ...
    teacher_checkpoint: str | None = None  # ... or these (e.g. a fine-tuned teacher)
    sources: list[str] = field(default_factory=list)      # image folders: a dataset (its train split) or plain images
    val_sources: list[str] = field(default_factory=list)  # labelled datasets: box Dice on their val split picks best
    val_limit: int | None = 8        # val cases per val source
    limit: int | None = None         # images per source (smoke runs)
    cache_teacher: bool = True       # teacher embeddings computed once and cached (no image augmentation then)
    cosine_weight: float = 0.0       # loss = MSE + cosine_weight * (1 - cosine similarity per position)


@dataclass
class UniversalConfig:
    """Objective "universal" (:mod:`medseg.train.universal`): one automatic model over many tasks."""

    tasks: str | None = None         # tasks file (YAML): {name: {root, modality, classes: {id: name}}}
    train_tasks: list[str] = field(default_factory=list)  # tasks of the file to train (empty: all)
    weights: list[float] = field(default_factory=list)    # sampling weight per train task (empty: sqrt of size)
    epoch_size: int | None = None    # items drawn per epoch (default: all train cases of the train tasks)
    freeze_old: bool = True          # tokens of tasks the starting checkpoint knew stay fixed
    train_shared: bool = True        # the head's shared parts (decoder, self-prompt) train; false: tokens only
    replay: list[str] = field(default_factory=list)       # known tasks whose train data is mixed in (rehearsal)
    task_rank: int = 0               # > 0: each new task gets its own low-rank update of the head's decoder
    coarse_weight: float = 0.5       # weight of the self-prompt (coarse mask) loss


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    universal: UniversalConfig = field(default_factory=UniversalConfig)


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dict (YAML/JSON-ready) of a Config."""
    return dataclasses.asdict(config)


def _fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown(key: str, where: str, valid) -> InputError:
    path = f"{where}.{key}" if where else key
    level = f"in {where!r}" if where else "at the top level"
    return InputError(f"unknown config key {path!r}; valid keys {level}: {', '.join(valid)}")


_TRUE, _FALSE, _NONE = ("true", "yes", "on", "1"), ("false", "no", "off", "0"), ("none", "null", "~", "")


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """``value`` (from YAML or a ``--set`` string) as type ``kind``; InputError naming ``name``."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if isinstance(value, bool):  # YAML 1.1 reads unquoted off/no/on/yes as booleans
                words = [c for c in CHOICES.get(name, ()) if c in (_TRUE if value else _FALSE)]
                if len(words) == 1:  # the one choice YAML turned into a boolean (amp: off)
                    return words[0]
                raise InputError(f"config key {name!r}: YAML read {value} (from yes/no/on/off/true/false); "
                                 f"quote the word, e.g. \"off\"")
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if typing.get_origin(kind) is list:
            items = yaml.safe_load(value) if isinstance(value, str) else value
            if isinstance(value, str) and not isinstance(items, list):
                items = [v.strip() for v in value.strip("[]() ").split(",")]
            if not isinstance(items, (list, tuple)):
                raise ValueError
            return [_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(items)]
    except InputError:
        raise
    except (TypeError, ValueError, yaml.YAMLError):
        pass
    else:
        raise TypeError(f"config field {name!r} has an unsupported type {kind}")
    shown = getattr(kind, "__name__", str(kind))
    raise InputError(f"config key {name!r}: cannot read {value!r} as {shown}")


def config_from_dict(data: dict | None) -> Config:
    """Config from a (partial) nested dict; missing keys keep their defaults.

    Raises:
        InputError: an unknown section or key (the message lists the valid ones), a section that
            is not a mapping, or a value that cannot be read as its field's type.
    """
    data = data or {}
    if not isinstance(data, dict):
        raise InputError(f"a config must be a mapping of sections, got {type(data).__name__}")
    sections = _fields(Config)
    parts = {}
    for section, cls in sections.items():
        values = data.get(section) or {}
        if not isinstance(values, dict):
            raise InputError(f"config section {section!r} must be a mapping of keys, got {values!r}")
        kinds = _fields(cls)
        for key in values:
            if key not in kinds:
                raise _unknown(key, section, kinds)
        parts[section] = cls(**{k: _coerce(v, kinds[k], f"{section}.{k}") for k, v in values.items()})
    for section in data:
        if section not in sections:
            raise _unknown(section, "", sections)
    config = Config(**parts)
    check_config(config)
    return config


def check_config(config: Config) -> None:
    """Values out of range or not among the choices -> InputError naming the key."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise InputError(f"config key {key!r}: {value!r} is not one of {', '.join(allowed)}")
    from medseg.models.build import WEIGHTS

    if config.model.weights not in WEIGHTS:
        raise InputError(f"config key 'model.weights': {config.model.weights!r} is not one of {', '.join(WEIGHTS)}")
    positive = {"train.epochs": config.train.epochs, "train.batch_size": config.train.batch_size,
                "train.log_every": config.train.log_every, "train.val_every": config.train.val_every,
                "optim.accumulate": config.optim.accumulate, "optim.lr": config.optim.lr}
    for key, value in positive.items():
        if value <= 0:
            raise InputError(f"config key {key!r} must be > 0, got {value}")
    for key, value in {"train.steps_per_epoch": config.train.steps_per_epoch, "data.val_limit": config.data.val_limit,
                       "train.time_budget_s": config.train.time_budget_s}.items():
        if value is not None and value <= 0:
            raise InputError(f"config key {key!r} must be > 0 or null, got {value}")
    if config.optim.grad_clip is not None and config.optim.grad_clip <= 0:
        raise InputError(f"config key 'optim.grad_clip' must be > 0 or null, got {config.optim.grad_clip}")
    if len(config.optim.betas) != 2:
        raise InputError(f"config key 'optim.betas' needs two numbers, got {config.optim.betas}")
    if min(config.data.box_jitter, config.optim.warmup_steps, config.data.num_workers, config.train.click_rounds) < 0:
        raise InputError("config keys 'data.box_jitter', 'optim.warmup_steps', 'data.num_workers' and "
                         "'train.click_rounds' must be >= 0")
    if config.model.lora_rank < 1:
        raise InputError(f"config key 'model.lora_rank' must be >= 1, got {config.model.lora_rank}")
    if config.optim.layer_decay is not None and not 0 < config.optim.layer_decay <= 1:
        raise InputError(f"config key 'optim.layer_decay' must be in (0, 1] or null, got {config.optim.layer_decay}")
    if not 0 <= config.optim.min_lr_ratio <= 1:
        raise InputError(f"config key 'optim.min_lr_ratio' must be in [0, 1], got {config.optim.min_lr_ratio}")


def _read_yaml(path: Path) -> dict:
    from medseg.data.spec import read_yaml

    data = read_yaml(path, "config file")
    if data is not None and not isinstance(data, dict):
        raise InputError(f"{path}: a config must be a mapping of sections (data, model, optim, train)")
    return data or {}


def apply_override(data: dict, override: str) -> None:
    """Set ``"section.key=value"`` in a nested dict (value kept as a string, coerced later)."""
    key, sep, value = override.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise InputError(f"override {override!r}: expected section.key=value, e.g. optim.lr=3e-4")
    section, name = parts
    sections = _fields(Config)
    if section not in sections:
        raise _unknown(section, "", sections)
    kinds = _fields(sections[section])
    if name not in kinds:
        raise _unknown(name, section, kinds)
    current = data.setdefault(section, {})
    if not isinstance(current, dict):
        raise InputError(f"config section {section!r} must be a mapping of keys, got {current!r}")
    current[name] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` ("a.b=value")."""
    data = _read_yaml(Path(path)) if path is not None else {}
    for override in overrides:
        apply_override(data, override)
    try:
        return config_from_dict(data)
    except InputError as exc:
        raise InputError(f"{path}: {exc}" if path is not None else str(exc)) from None


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable by :func:`load_config`)."""
    from medseg.io.outputs import write_bytes

    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    write_bytes(Path(path), text.encode("utf-8"))
