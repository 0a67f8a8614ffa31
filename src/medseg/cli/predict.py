"""``medseg predict``: a picture or volume from a box and/or clicks; with no prompt (``--task``, a planned 3D
model); or a replayed ``medseg serve`` session."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from .options import device_of, models_of, predictor_for, universal_default, volume_model, write_outputs


def cmd_predict(args: argparse.Namespace) -> int:
    from ..infer.files import segment_file

    if args.task:
        from ..infer.auto_files import predict_auto

        universal_default(args)
        if args.box or args.point or args.negative_point:
            raise InputError("--task segments with no prompt; drop --box/--point, or drop --task to prompt")
        return predict_auto(predictor_for(args), args.input, args.task, args.out, args.overlay, args.overwrite)
    from ..io import read_image

    image = read_image(args.input, modality=args.modality)  # a bad file fails before the model loads
    if args.prompts is not None:
        return _replay_prompts(args, image)
    from ..models.build import VOLUMETRIC

    if args.model in VOLUMETRIC:
        return _predict_volume_auto(args, image)
    predictor = predictor_for(args)
    output_hw = None if args.output_size is None else (args.output_size[1], args.output_size[0])
    result = segment_file(predictor, image, boxes=args.box, points=args.point,
                          negative_points=args.negative_point, slices=args.slices, key_slice=args.key_slice,
                          modality=args.modality, propagate=args.propagate, multimask=args.multimask,
                          output_hw=output_hw)
    out, ov = write_outputs(result, args.out, args.overlay, args.overwrite)
    n = int(result.labels.max())
    print(f"{n} object(s), {int((result.labels > 0).sum())} voxels -> {out}")
    if result.scores:
        print("predicted IoU: " + ", ".join(f"{s:.3f}" for s in result.scores))
    if ov:
        print(f"overlay -> {ov}")
    return 0


def _predict_volume_auto(args: argparse.Namespace, image) -> int:
    """``--model la-heart-3d`` (shipped) or ``--model unet3d --checkpoint W``: a planned 3D model segments the
    volume with no prompt (sliding window)."""
    import numpy as np

    from ..infer.files import FileResult
    from ..infer.sliding import segment_volume_auto

    if args.box or args.point or args.negative_point:
        raise InputError(f"model {args.model!r} segments with no prompt; drop --box/--point")
    if image.array.shape[1] == 1:
        raise InputError(f"{args.input}: a 2D picture; model {args.model!r} segments volumes")
    model = volume_model(args)
    labels = segment_volume_auto(model, image, mirror=args.mirror)
    result = FileResult(labels.astype(np.uint8 if labels.max() < 256 else np.uint16), image, labels.shape[0] // 2, [])
    out, ov = write_outputs(result, args.out, args.overlay, args.overwrite)
    counts = ", ".join(f"class {c}: {int((labels == c).sum())}" for c in model.plan.classes)
    print(f"{counts} voxels -> {out}")
    if ov:
        print(f"overlay -> {ov}")
    return 0


def _replay_prompts(args: argparse.Namespace, image) -> int:
    """``--prompts session.json``: medseg serve's prompts, replayed in order, to the label map the page showed.
    3D clicks replay with ``--model`` when it is a promptable 3D model (its 2D base then replays the 2D
    prompts), else with the session's ``volume_model`` and its shipped weights."""
    import numpy as np

    from ..infer.files import FileResult
    from ..infer.session import is_volume_prompt, read_session, replay

    if args.box or args.point or args.negative_point:
        raise InputError("--prompts replays a session's prompts; drop --box/--point/--negative-point")
    session = read_session(args.prompts)
    tasks = [p["automatic"] for p in session["prompts"] if p.get("automatic")]
    automatic = bool(tasks)
    clicks3d = [n for n, p in enumerate(session["prompts"]) if is_volume_prompt(p)]
    if args.model in models_of("promptable-3d"):
        if automatic:
            raise InputError(f"{args.prompts}: it holds an automatic segmentation (task {tasks[0]!r}), which a "
                             f"promptable 3D model cannot replay: replay it with --model universal (its 3D clicks then "
                             f"replay with {session.get('volume_model') or 'litemedsam-3d'}'s shipped weights)")
        volume = predictor_for(args)
        predictor = volume.slices  # the 3D model's 2D base (the served 2D path of litemedsam and universal)
    else:
        if automatic:  # the page's automatic mode: the same universal model
            from ..models.build import UNIVERSAL

            if args.model not in (*UNIVERSAL, "litemedsam"):
                raise InputError(f"{args.prompts}: it holds an automatic segmentation (task {tasks[0]!r}): replay it "
                                 f"with a universal model (--model universal, or --checkpoint of one with that task)")
            universal_default(args)
        volume = _session_volume_predictor(args, session, clicks3d[0]) if clicks3d else None
        predictor = predictor_for(args, automatic=automatic)
    labels = replay(predictor, image, session, args.prompts, volume=volume)
    slices = [int(round(p["points3d"][0][2] if p.get("points3d") else (p["box3d"][2] + p["box3d"][5]) / 2))
              if is_volume_prompt(p) else int(p.get("slice") or 0) for p in session["prompts"]]
    out, ov = write_outputs(FileResult(labels, image, slices[-1], []), args.out, args.overlay, args.overwrite)
    print(f"replayed {len(slices)} prompt(s): {len(np.unique(labels)) - 1} object(s), {int((labels > 0).sum())} voxels -> {out}")
    return 0


def _session_volume_predictor(args: argparse.Namespace, session: dict, first: int):
    """The promptable 3D model that made a session's 3D clicks (``volume_model``, with its shipped weights), for
    :func:`_replay_prompts` with a 2D ``--model``; InputError naming ``--model NAME --checkpoint W`` when the
    session was made with other weights. ``first``: the first 3D prompt's index."""
    from ..errors import CheckpointError
    from ..infer.volume_prompts import VolumePredictor
    from ..models import build_model

    name = session.get("volume_model") or "litemedsam-3d"
    where = f"{args.prompts}: prompt {first} is a 3D click made with {name!r}"
    redo = f"replay the session with --model {name} --checkpoint W (its 2D prompts then replay with its 2D base model)"
    if name not in models_of("promptable-3d"):
        raise InputError(f"{where}, which this medseg does not know; replay with --model NAME of a promptable 3D model "
                         f"({', '.join(models_of('promptable-3d'))})")
    weights = session.get("volume_weights", "shipped")
    if weights != "shipped":
        made = "weights of its own (`medseg serve --volume-checkpoint W`)" if weights == "checkpoint" else \
            "random weights, which no replay can have again"
        raise InputError(f"{where} and {made}: {redo}")
    try:
        model = build_model(name, pretrained=True)
    except CheckpointError as error:
        raise InputError(f"{where}, whose shipped weights did not load ({error}); {redo}") from None
    print(f"note: the 3D clicks replay with {name} (shipped weights)", file=sys.stderr)
    return VolumePredictor(model, device=device_of(args.device), engine=args.engine, precision=args.precision,
                           threads=args.threads, every_slice=args.every_slice)
