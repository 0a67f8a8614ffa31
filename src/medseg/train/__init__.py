"""Training: one loop for every objective, resumable exactly, one process or many (torchrun).

    from medseg.train import load_config, train
    config = load_config("configs/tiny_smoke.yaml", ["data.root=../shared/data/kvasir_seg"])
    result = train(config, "runs/smoke")   # -> {"history": [...], "steps": [...], "best_dice": ...}

Modules: ``config`` (dataclasses, YAML, --set), ``datasets`` (prompted objects, epoch sampler),
``objectives`` (the ``Objective`` interface, the ``RunContext`` the loop hands it, the registry,
"supervised"; "supervised_cached" in ``cached``, "unet" in ``unet``, "distill" in ``distill``,
"universal" in ``universal``), ``interactive`` (the prompt strategy: box or click chains),
``losses``, ``optim`` (freezing, the training forward, AdamW, schedule, AMP), ``checkpoint``
(safetensors + JSON + training state, atomic), ``embeddings`` (cached encoder outputs), ``logs``
(CSV, TensorBoard, curves), ``ddp``, ``loop`` (:func:`train`, ``train.time_budget_s``), ``cli``
(``medseg train``: the only reader of the environment).
"""

from medseg.train.config import (Config, DataConfig, ModelConfig, OptimConfig, TrainConfig, config_from_dict,
                                 config_to_dict, load_config)
from medseg.train.loop import train
from medseg.train.objectives import OBJECTIVES, Objective, register_objective

__all__ = [
    "OBJECTIVES",
    "Config",
    "DataConfig",
    "ModelConfig",
    "Objective",
    "OptimConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "register_objective",
    "train",
]

# Objectives register themselves on import; these live in their own modules.
from medseg.train import cached as _cached  # noqa: E402,F401 - "supervised_cached"
from medseg.train import unet as _unet  # noqa: E402,F401 - "unet"
from medseg.train import distill as _distill  # noqa: E402,F401 - "distill"
from medseg.train import universal as _universal  # noqa: E402,F401 - "universal"
