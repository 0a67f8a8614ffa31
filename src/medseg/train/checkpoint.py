"""Checkpoints of a run folder: ``<tag>.safetensors`` + ``<tag>.json`` + ``<tag>.pt``.

* ``<tag>.safetensors``: the model's state dict only; ``build_model(name, checkpoint=...)`` loads it.
* ``<tag>.json``: model name, resolved config, epoch, global step, metrics, best Dice, medseg version.
* ``<tag>.pt``: optimizer, LR scheduler, grad scaler and RNG states (python, numpy, torch) as
  tensors and plain containers only, so ``torch.load(weights_only=True)`` reads it.

Tags are ``latest`` (every epoch) and ``best`` (when the validation Dice improves). Every file is
written atomically (temporary file in the same folder, fsync, ``os.replace``), so a kill mid-write
leaves the previous file whole. The three files of one save share a ``write_id``; loading checks it,
so a kill *between* two files is reported instead of resuming from a mixed state.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

import medseg
from medseg.errors import CheckpointError
from medseg.io.outputs import write_bytes
from medseg.models.build import _load_strictly
from medseg.models.weights import load_state_dict

SUFFIXES = (".safetensors", ".json", ".pt")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states as tensors, lists and numbers."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | Path, tags: str | tuple[str, ...], model: torch.nn.Module, *, model_name: str,
                    config: dict, epoch: int, step: int, metrics: dict, best_dice: float | None,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    scaler: Any = None) -> Path:
    """Write ``<tag>.pt``, ``<tag>.safetensors`` and ``<tag>.json`` (in that order) into ``run_dir``
    for each tag (``"latest"``, or ``("latest", "best")``: serialised once, written twice).

    ``model`` is the bare model (not a DDP wrapper). Returns the path of the last weights file.
    """
    from safetensors.torch import save

    run_dir = Path(run_dir)
    write_id = uuid.uuid4().hex
    state = _to_bytes({"write_id": write_id, "epoch": epoch, "step": step, "rng": rng_state(),
                       "optimizer": optimizer.state_dict() if optimizer is not None else {},
                       "scheduler": scheduler.state_dict() if scheduler is not None else {},
                       "scaler": scaler.state_dict() if scaler is not None else {}})
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    header = {"model": model_name, "epoch": str(epoch), "step": str(step), "write_id": write_id}
    weights = save(tensors, metadata=header)
    meta = {"model": model_name, "epoch": epoch, "step": step, "metrics": metrics, "best_dice": best_dice,
            "medseg_version": medseg.__version__, "torch_version": torch.__version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "write_id": write_id, "config": config}
    sidecar = json.dumps(meta, indent=2).encode("utf-8")
    for tag in (tags,) if isinstance(tags, str) else tags:
        write_bytes(run_dir / f"{tag}.pt", state)
        write_bytes(run_dir / f"{tag}.safetensors", weights)
        write_bytes(run_dir / f"{tag}.json", sidecar)
    return run_dir / f"{tag}.safetensors"


def _to_bytes(obj: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def has_checkpoint(run_dir: str | Path, tag: str) -> bool:
    return all((Path(run_dir) / f"{tag}{s}").is_file() for s in SUFFIXES)


def read_meta(run_dir: str | Path, tag: str) -> dict:
    """The JSON sidecar of a checkpoint, or CheckpointError naming the file."""
    path = Path(run_dir) / f"{tag}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint metadata not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable checkpoint metadata ({exc})") from None


def load_weights(model: torch.nn.Module, path: str | Path, model_name: str) -> None:
    """Strictly load a ``.safetensors``/``.pth`` state dict; another model's -> CheckpointError."""
    _load_strictly(model, load_state_dict(path), f"{path}: does not fit model {model_name!r}")


def load_checkpoint(run_dir: str | Path, tag: str, model: torch.nn.Module, model_name: str,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    scaler: Any = None, restore_rng: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects; returns its metadata.

    Raises:
        CheckpointError: a file is missing or unreadable, the checkpoint belongs to another model,
            or its three files come from different saves (a write interrupted between files).
    """
    run_dir = Path(run_dir)
    meta = read_meta(run_dir, tag)
    if meta.get("model") != model_name:
        raise CheckpointError(f"{run_dir / (tag + '.json')}: checkpoint of model {meta.get('model')!r}, "
                              f"but the config trains {model_name!r}")
    path = run_dir / f"{tag}.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: training state not found") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable training state ({type(exc).__name__}: {exc})") from None
    weights = run_dir / f"{tag}.safetensors"
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
    ids = {meta.get("write_id"), state.get("write_id"), header.get("write_id")}
    if len(ids) != 1:
        raise CheckpointError(f"{run_dir}: {tag}.safetensors, {tag}.json and {tag}.pt come from different saves "
                              f"(a write was interrupted); resume from another copy or start a new run")
    load_weights(model, weights, model_name)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return meta
