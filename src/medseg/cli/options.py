"""What the commands share: the model options, the predictor they ask for, threads and devices, and
writing a result."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="litemedsam", help="registered model name (see `medseg models`)")
    p.add_argument("--checkpoint", help="weights file (.safetensors or .pth) instead of the published ones")
    p.add_argument("--weights", choices=("shipped", "published"), default="shipped",
                   help="without --checkpoint: 'shipped' (default; medseg's click-trained prompt encoder and mask "
                        "decoder) or 'published' (the model's own published decoder)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--engine", choices=("torch", "onnxruntime", "openvino"), default="torch",
                   help="inference engine (default torch); onnxruntime/openvino run an ONNX export on the CPU, made "
                        "once and cached (`pip install medseg[onnx]` / `medseg[openvino]`)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16", "int8"), default="fp32",
                   help="fp32 (default); bf16 (torch, openvino); fp16 storage and int8 (onnxruntime, openvino)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default, the number of cores)")


def every_slice_arg(p: argparse.ArgumentParser) -> None:
    """``--every-slice`` of the commands that run a promptable 3D model (predict, evaluate)."""
    p.add_argument("--every-slice", action="store_true",
                   help="promptable 3D models (litemedsam-3d): encode every slice, also where slices are thin "
                        "enough that every other one is encoded and the rest interpolated (twice the encoding time)")


def device_of(name: str | None):
    import torch

    if name is None:
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA GPU is available here; use --device cpu.")
    return device


def promptable_model(args: argparse.Namespace, kinds: tuple[str, ...] = ("promptable", "universal"),
                      use: str = "prompted"):
    """``--model`` (of ``kinds``) with its pretrained weights or ``--checkpoint`` (a note on stderr when
    that leaves random weights); InputError naming what it cannot be (``use``) for another model."""
    from ..models import build_model, list_models
    from ..models.build import has_published_weights

    allowed = [name for kind in kinds for name in list_models(kind)]
    if args.model not in allowed:
        kind = "an automatic model that takes no prompt" if args.model in list_models() else "unknown"
        raise InputError(f"model {args.model!r} cannot be {use}: it is {kind}; promptable models: {', '.join(allowed)}")
    pretrained = args.checkpoint is None and has_published_weights(args.model)
    if args.checkpoint is None and not pretrained:
        print(f"note: model {args.model!r} has no published weights and no --checkpoint: random weights",
              file=sys.stderr)
    return build_model(args.model, pretrained=pretrained, checkpoint=args.checkpoint, weights=args.weights)


def predictor_for(args: argparse.Namespace, automatic: bool = False):
    """The predictor the model arguments ask for; an AutoSegmenter with ``automatic`` or ``--task``; a
    VolumePredictor for a promptable 3D model."""
    from ..infer import Predictor

    device = device_of(args.device)
    set_threads(args.threads)
    kinds = ("promptable", "universal") if automatic or getattr(args, "task", None) else \
        ("promptable", "universal", "promptable-3d")
    model = promptable_model(args, kinds)
    if args.model in models_of("promptable-3d"):
        from ..infer.volume_prompts import VolumePredictor

        return VolumePredictor(model, device=device, engine=args.engine, precision=args.precision, threads=args.threads,
                               every_slice=getattr(args, "every_slice", False))
    if automatic or getattr(args, "task", None):
        from ..infer.automatic import AutoSegmenter

        return AutoSegmenter(model, device=device, engine=args.engine, precision=args.precision, threads=args.threads)
    return Predictor(model, device=device, engine=args.engine, precision=args.precision, threads=args.threads)


def models_of(kind: str) -> list[str]:
    from ..models import list_models

    return list_models(kind)


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's intra-op threads, set once (the ONNX engines take the same number)."""
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads {threads}: give 1 or more")
    import torch

    torch.set_num_threads(threads)


def universal_default(args: argparse.Namespace) -> None:
    """With --task, the model defaults to "universal": the shipped one, or a trained --checkpoint."""
    from ..models.build import has_shipped_tasks

    if args.model == "litemedsam":
        args.model = "universal"
    if args.checkpoint is None and not (has_shipped_tasks(args.model) and args.weights == "shipped"):
        raise InputError(f"--task with model {args.model!r} needs --checkpoint: a universal model trained with the "
                         f"'universal' objective (`medseg tasks` lists what the shipped one knows)")


def _default_mask_path(src: Path, volumetric: bool) -> Path:
    name = src.name if src.is_dir() else src.name.split(".")[0]
    return Path.cwd() / f"{name}_mask{'.nii.gz' if volumetric else '.png'}"


def write_outputs(result, out: Path | None, overlay_path: Path | None, overwrite: bool) -> tuple[Path, Path | None]:
    """Write the label map (with the input's geometry) and the overlay picture, both paths checked
    first (:func:`medseg.io.outputs.plan_outputs`)."""
    from ..data.cases import plane
    from ..io import write_label
    from ..io.outputs import plan_outputs
    from ..viz import overlay, save_png

    volumetric = result.labels.shape[0] > 1
    source = result.image.meta.source
    out = out or _default_mask_path(Path(source), volumetric)
    planned = plan_outputs({"--out": out, "--overlay": overlay_path}, inputs=[source], overwrite=overwrite)
    written = write_label(result.labels, planned["--out"], like=result.image.meta, overwrite=overwrite)
    if overlay_path is not None:
        z = result.key_slice
        rgb = overlay(plane(result.image, z), result.labels[z], boxes=result.boxes, points=result.points,
                      point_labels=result.point_labels)
        save_png(rgb, planned["--overlay"], overwrite=overwrite, source=source)
    return written, planned["--overlay"]


def volume_model(args: argparse.Namespace):
    """A planned 3D model: ``--checkpoint``, else its shipped weights (``medseg models``), on ``--device``
    with ``--threads``."""
    from ..models import build_model
    from ..models.build import has_published_weights

    if args.checkpoint is None and not has_published_weights(args.model):
        raise InputError(f"model {args.model!r} has no shipped weights: give --checkpoint from a 'volume' run "
                         f"(`medseg train configs/unet3d_hippocampus.yaml`), or use a shipped 3D model "
                         f"(`medseg models`)")
    set_threads(args.threads)
    model = build_model(args.model, pretrained=args.checkpoint is None, checkpoint=args.checkpoint)
    return model.to(device_of(args.device))


def failed_status(n_errors: int, n_cases: int) -> int:
    """Exit status of an evaluation: 1 (with a line on stderr) when any case failed, else 0."""
    if n_errors:
        print(f"medseg evaluate: {n_errors} of {n_cases} cases failed (listed above)", file=sys.stderr)
        return 1
    return 0


def is_volume(path) -> bool:
    from ..io import read_image

    return read_image(path).array.shape[1] > 1
