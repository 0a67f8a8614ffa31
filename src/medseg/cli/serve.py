"""``medseg serve``: the options checked, the 2D predictor and the model of the page's 3D clicks."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from .options import device_of, models_of, predictor_for


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import check_extra, run

    check_extra()  # before the model loads: a missing extra is said at once
    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port}: give 1..65535")
    if args.max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb {args.max_upload_mb}: give a positive size")
    if args.root is not None and not args.root.is_dir():
        raise InputError(f"--root {args.root}: not a folder; give the folder whose images the page may open")
    from ..models.build import UNIVERSAL

    if args.model in models_of("promptable-3d"):
        raise InputError(f"--model {args.model!r} is a promptable 3D model: serve it for 3D clicks with "
                         f"--volume-model {args.model} (--model is the 2D model of the page's boxes and clicks)")
    volume_models = models_of("promptable-3d")
    if args.volume_model not in (None, "none", *volume_models):
        raise InputError(f"--volume-model {args.volume_model!r}: give a promptable 3D model "
                         f"({', '.join(volume_models)}) or none")
    if args.volume_checkpoint is not None and args.volume_model == "none":
        raise InputError("--volume-checkpoint with --volume-model none: drop one of them")
    if args.volume_checkpoint is not None and not args.volume_checkpoint.is_file():
        raise InputError(f"--volume-checkpoint {args.volume_checkpoint}: no such file; give the weights of a "
                         f"volume_prompts training run")
    if (args.model, args.checkpoint, args.weights) == ("litemedsam", None, "shipped"):
        args.model = "universal"  # the same promptable path, plus the shipped automatic head's tasks
    predictor = predictor_for(args, automatic=args.model in UNIVERSAL)
    return run(predictor, model_name=args.model, host=args.host, port=args.port, root=args.root,
               token=args.token, max_upload_mb=args.max_upload_mb, cache_size=args.cache_size,
               volume=serve_volume_model(args))


def serve_volume_model(args: argparse.Namespace):
    """The 3D clicks of ``medseg serve`` (:class:`~medseg.serve.state.VolumeModel`): ``--volume-model`` (checked
    by :func:`cmd_serve`) with ``--volume-checkpoint``, on the 2D model's device and engine. Without
    ``--volume-model``: litemedsam-3d when its shipped weights load, else 3D clicks are off (a note says why);
    a named model must load its shipped weights, or has none (random weights, with a note)."""
    from ..errors import CheckpointError
    from ..infer.volume_prompts import VolumePredictor
    from ..models import build_model
    from ..models.build import PROMPTABLE_3D, has_published_weights
    from ..serve.state import VolumeModel

    name, checkpoint = args.volume_model, args.volume_checkpoint
    if name == "none":
        return VolumeModel(note=f"started with --volume-model none: start medseg serve with --volume-model NAME "
                                f"({', '.join(models_of('promptable-3d'))})")
    if name is None and checkpoint is None:
        name, weights = "litemedsam-3d", "shipped"
        try:
            if not has_published_weights(name):  # said before the 2D base loads for nothing
                raise CheckpointError(f"its shipped 3D head {PROMPTABLE_3D[name][1].name} is missing from this installation")
            model = build_model(name, pretrained=True)
        except CheckpointError as error:
            note = (f"the default 3D model {name} did not load ({error}); start medseg serve with --volume-model {name} "
                    f"--volume-checkpoint W (weights of a volume_prompts training run)")
            print(f"note: 3D clicks are off: {note}", file=sys.stderr)
            return VolumeModel(note=note)
    else:
        name = name or "litemedsam-3d"
        weights = "checkpoint" if checkpoint is not None else "shipped" if has_published_weights(name) else "random"
        if weights == "random" and PROMPTABLE_3D[name][1] is not None:
            raise InputError(f"--volume-model {name}: its shipped 3D head ({PROMPTABLE_3D[name][1].name}) is missing "
                             f"from this installation; give --volume-checkpoint W (weights of a volume_prompts run)")
        if weights == "random":
            print(f"note: --volume-model {name!r} has no published weights and no --volume-checkpoint: random weights",
                  file=sys.stderr)
        model = build_model(name, pretrained=weights == "shipped", checkpoint=checkpoint)
    predictor = VolumePredictor(model, device=device_of(args.device), engine=args.engine, precision=args.precision,
                                threads=args.threads)
    return VolumeModel(predictor, name, weights, note="")
