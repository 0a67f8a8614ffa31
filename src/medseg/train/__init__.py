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

import importlib

# Attributes load on first use (PEP 562), so ``import medseg.train.cli`` (``medseg --help``) does not
# import torch. Anything but the configs imports the loop first, which imports every objective module
# (they register themselves there).
_HOMES = {**{name: "medseg.train.config" for name in ("Config", "DataConfig", "ModelConfig", "OptimConfig",
                                                      "TrainConfig", "config_from_dict", "config_to_dict",
                                                      "load_config")},
          "train": "medseg.train.loop",
          **{name: "medseg.train.objectives" for name in ("OBJECTIVES", "Objective", "register_objective")}}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'medseg.train' has no attribute {name!r}")
    if _HOMES[name] != "medseg.train.config":
        importlib.import_module("medseg.train.loop")
    return getattr(importlib.import_module(_HOMES[name]), name)
