"""``medseg <stage>``: one subcommand per stage (demo, predict, evaluate, train, data, export, models, tasks)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from .errors import InputError, MedsegError


def _model_args(p: argparse.ArgumentParser) -> None:
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


def _device(name: str | None):
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


def _promptable_model(args: argparse.Namespace, kinds: tuple[str, ...] = ("promptable", "universal"),
                      use: str = "prompted"):
    """``--model`` (of ``kinds``) with its pretrained weights or ``--checkpoint`` (a note on stderr when
    that leaves random weights); InputError naming what it cannot be (``use``) for another model."""
    from .models import build_model, list_models
    from .models.build import has_published_weights

    allowed = [name for kind in kinds for name in list_models(kind)]
    if args.model not in allowed:
        kind = "an automatic model that takes no prompt" if args.model in list_models() else "unknown"
        raise InputError(f"model {args.model!r} cannot be {use}: it is {kind}; promptable models: {', '.join(allowed)}")
    pretrained = args.checkpoint is None and has_published_weights(args.model)
    if args.checkpoint is None and not pretrained:
        print(f"note: model {args.model!r} has no published weights and no --checkpoint: random weights",
              file=sys.stderr)
    return build_model(args.model, pretrained=pretrained, checkpoint=args.checkpoint, weights=args.weights)


def _predictor(args: argparse.Namespace, automatic: bool = False):
    """The predictor the model arguments ask for; an AutoSegmenter with ``automatic`` or ``--task``; a
    VolumePredictor for a promptable 3D model."""
    from .infer import Predictor

    device = _device(args.device)
    _set_threads(args.threads)
    kinds = ("promptable", "universal") if automatic or getattr(args, "task", None) else \
        ("promptable", "universal", "promptable-3d")
    model = _promptable_model(args, kinds)
    if args.model in _models_of("promptable-3d"):
        from .infer.volume_prompts import VolumePredictor

        return VolumePredictor(model, device=device, engine=args.engine, precision=args.precision, threads=args.threads)
    if automatic or getattr(args, "task", None):
        from .infer.automatic import AutoSegmenter

        return AutoSegmenter(model, device=device, engine=args.engine, precision=args.precision, threads=args.threads)
    return Predictor(model, device=device, engine=args.engine, precision=args.precision, threads=args.threads)


def _models_of(kind: str) -> list[str]:
    from .models import list_models

    return list_models(kind)


def _set_threads(threads: int | None) -> None:
    """``--threads N``: torch's intra-op threads, set once (the ONNX engines take the same number)."""
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads {threads}: give 1 or more")
    import torch

    torch.set_num_threads(threads)


def _universal_default(args: argparse.Namespace) -> None:
    """With --task, the model defaults to "universal": the shipped one, or a trained --checkpoint."""
    from .models.build import has_shipped_tasks

    if args.model == "litemedsam":
        args.model = "universal"
    if args.checkpoint is None and not (has_shipped_tasks(args.model) and args.weights == "shipped"):
        raise InputError(f"--task with model {args.model!r} needs --checkpoint: a universal model trained with the "
                         f"'universal' objective (`medseg tasks` lists what the shipped one knows)")


def _default_mask_path(src: Path, volumetric: bool) -> Path:
    name = src.name if src.is_dir() else src.name.split(".")[0]
    return Path.cwd() / f"{name}_mask{'.nii.gz' if volumetric else '.png'}"


def _write_outputs(result, out: Path | None, overlay_path: Path | None, overwrite: bool) -> tuple[Path, Path | None]:
    """Write the label map (with the input's geometry) and the overlay picture, both paths checked
    first (:func:`medseg.io.outputs.plan_outputs`)."""
    from .data.cases import plane
    from .io import write_label
    from .io.outputs import plan_outputs
    from .viz import overlay, save_png

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


def cmd_predict(args: argparse.Namespace) -> int:
    from .infer.files import segment_file

    if args.task:
        from .infer.auto_files import predict_auto

        _universal_default(args)
        if args.box or args.point or args.negative_point:
            raise InputError("--task segments with no prompt; drop --box/--point, or drop --task to prompt")
        return predict_auto(_predictor(args), args.input, args.task, args.out, args.overlay, args.overwrite)
    from .io import read_image

    image = read_image(args.input, modality=args.modality)  # a bad file fails before the model loads
    if args.prompts is not None:
        return _replay_prompts(args, image)
    from .models.build import VOLUMETRIC

    if args.model in VOLUMETRIC:
        return _predict_volume_auto(args, image)
    predictor = _predictor(args)
    output_hw = None if args.output_size is None else (args.output_size[1], args.output_size[0])
    result = segment_file(predictor, image, boxes=args.box, points=args.point,
                          negative_points=args.negative_point, slices=args.slices, key_slice=args.key_slice,
                          modality=args.modality, propagate=args.propagate, multimask=args.multimask,
                          output_hw=output_hw)
    out, ov = _write_outputs(result, args.out, args.overlay, args.overwrite)
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

    from .infer.files import FileResult
    from .infer.sliding import segment_volume_auto

    if args.box or args.point or args.negative_point:
        raise InputError(f"model {args.model!r} segments with no prompt; drop --box/--point")
    if image.array.shape[1] == 1:
        raise InputError(f"{args.input}: a 2D picture; model {args.model!r} segments volumes")
    model = _volume_model(args)
    labels = segment_volume_auto(model, image, mirror=args.mirror)
    result = FileResult(labels.astype(np.uint8 if labels.max() < 256 else np.uint16), image, labels.shape[0] // 2, [])
    out, ov = _write_outputs(result, args.out, args.overlay, args.overwrite)
    counts = ", ".join(f"class {c}: {int((labels == c).sum())}" for c in model.plan.classes)
    print(f"{counts} voxels -> {out}")
    if ov:
        print(f"overlay -> {ov}")
    return 0


def _volume_model(args: argparse.Namespace):
    """A planned 3D model: ``--checkpoint``, else its shipped weights (``medseg models``), on ``--device``
    with ``--threads``."""
    from .models import build_model
    from .models.build import has_published_weights

    if args.checkpoint is None and not has_published_weights(args.model):
        raise InputError(f"model {args.model!r} has no shipped weights: give --checkpoint from a 'volume' run "
                         f"(`medseg train configs/unet3d_hippocampus.yaml`), or use a shipped 3D model "
                         f"(`medseg models`)")
    _set_threads(args.threads)
    model = build_model(args.model, pretrained=args.checkpoint is None, checkpoint=args.checkpoint)
    return model.to(_device(args.device))


def _replay_prompts(args: argparse.Namespace, image) -> int:
    """``--prompts session.json``: medseg serve's prompts, replayed in order, to the label map the page showed.
    3D clicks replay with ``--model`` when it is a promptable 3D model (its 2D base then replays the 2D
    prompts), else with the session's ``volume_model`` and its shipped weights."""
    import numpy as np

    from .infer.files import FileResult
    from .infer.session import is_volume_prompt, read_session, replay

    if args.box or args.point or args.negative_point:
        raise InputError("--prompts replays a session's prompts; drop --box/--point/--negative-point")
    session = read_session(args.prompts)
    tasks = [p["automatic"] for p in session["prompts"] if p.get("automatic")]
    automatic = bool(tasks)
    clicks3d = [n for n, p in enumerate(session["prompts"]) if is_volume_prompt(p)]
    if args.model in _models_of("promptable-3d"):
        if automatic:
            raise InputError(f"{args.prompts}: it holds an automatic segmentation (task {tasks[0]!r}), which a "
                             f"promptable 3D model cannot replay: replay it with --model universal (its 3D clicks then "
                             f"replay with {session.get('volume_model') or 'litemedsam-3d'}'s shipped weights)")
        volume = _predictor(args)
        predictor = volume.slices  # the 3D model's 2D base (the served 2D path of litemedsam and universal)
    else:
        if automatic:  # the page's automatic mode: the same universal model
            from .models.build import UNIVERSAL

            if args.model not in (*UNIVERSAL, "litemedsam"):
                raise InputError(f"{args.prompts}: it holds an automatic segmentation (task {tasks[0]!r}): replay it "
                                 f"with a universal model (--model universal, or --checkpoint of one with that task)")
            _universal_default(args)
        volume = _session_volume_predictor(args, session, clicks3d[0]) if clicks3d else None
        predictor = _predictor(args, automatic=automatic)
    labels = replay(predictor, image, session, args.prompts, volume=volume)
    slices = [int(round(p["points3d"][0][2] if p.get("points3d") else (p["box3d"][2] + p["box3d"][5]) / 2))
              if is_volume_prompt(p) else int(p.get("slice") or 0) for p in session["prompts"]]
    out, ov = _write_outputs(FileResult(labels, image, slices[-1], []), args.out, args.overlay, args.overwrite)
    print(f"replayed {len(slices)} prompt(s): {len(np.unique(labels)) - 1} object(s), {int((labels > 0).sum())} voxels -> {out}")
    return 0


def _session_volume_predictor(args: argparse.Namespace, session: dict, first: int):
    """The promptable 3D model that made a session's 3D clicks (``volume_model``, with its shipped weights), for
    :func:`_replay_prompts` with a 2D ``--model``; InputError naming ``--model NAME --checkpoint W`` when the
    session was made with other weights. ``first``: the first 3D prompt's index."""
    from .errors import CheckpointError
    from .infer.volume_prompts import VolumePredictor
    from .models import build_model

    name = session.get("volume_model") or "litemedsam-3d"
    where = f"{args.prompts}: prompt {first} is a 3D click made with {name!r}"
    redo = f"replay the session with --model {name} --checkpoint W (its 2D prompts then replay with its 2D base model)"
    if name not in _models_of("promptable-3d"):
        raise InputError(f"{where}, which this medseg does not know; replay with --model NAME of a promptable 3D model "
                         f"({', '.join(_models_of('promptable-3d'))})")
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
    return VolumePredictor(model, device=_device(args.device), engine=args.engine, precision=args.precision,
                           threads=args.threads)


def _evaluate_outputs(args: argparse.Namespace) -> dict[str, Path | None]:
    """Every output of ``medseg evaluate``, checked before the model loads: never a dataset's own file."""
    from .data.datasets import dataset_files
    from .io.outputs import plan_outputs

    wanted = {"--json": args.json, "--csv": args.csv, "--figure": args.figure}
    return plan_outputs(wanted, protected=dataset_files(args.dataset), overwrite=args.overwrite)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.datasets import dataset_cases

    dataset_cases(args.dataset, args.split)  # a wrong folder or split fails before the model loads
    outputs = _evaluate_outputs(args)
    from .models.build import VOLUMETRIC

    if args.auto or args.task:
        return _evaluate_auto(args, outputs)
    if args.model in VOLUMETRIC:
        raise InputError(f"model {args.model!r} segments volumes with no prompt: add --auto")
    if args.model in _models_of("promptable-3d") and args.prompt != "clicks":
        raise InputError(f"model {args.model!r} is evaluated with --prompt clicks (--first point or box, "
                         f"--rounds N; --rounds 1 --first box for a 3D box alone)")
    predictor = _predictor(args)
    if args.prompt == "clicks":
        return _evaluate_clicks(args, predictor, outputs)
    from .eval import evaluate_dataset

    report = evaluate_dataset(predictor, args.dataset, split=args.split, prompt=args.prompt, limit=args.limit,
                              progress=not args.no_progress, overlays=outputs["--figure"] is not None)
    report.print_table()
    for name, write in (("--json", report.to_json), ("--csv", report.to_csv), ("--figure", report.save_figure)):
        if outputs[name] is not None:
            print(f"wrote {write(outputs[name], overwrite=args.overwrite)}")
    return _failed(len(report.errors), report.summary["n_cases"] + len(report.errors))


def _failed(n_errors: int, n_cases: int) -> int:
    """Exit status of an evaluation: 1 (with a line on stderr) when any case failed, else 0."""
    if n_errors:
        print(f"medseg evaluate: {n_errors} of {n_cases} cases failed (listed above)", file=sys.stderr)
        return 1
    return 0


def _evaluate_auto(args: argparse.Namespace, outputs: dict[str, Path | None]) -> int:
    from .eval.automatic import evaluate_auto, evaluate_volumes_auto, print_auto, write_auto_json
    from .models.build import VOLUMETRIC

    if args.model in VOLUMETRIC:
        if args.task:
            raise InputError(f"model {args.model!r} segments the classes of its own plan; drop --task")
        result = evaluate_volumes_auto(_volume_model(args), args.dataset, args.split, args.limit,
                                       progress=not args.no_progress, mirror=args.mirror, name=args.model)
    else:
        if not (args.auto and args.task):
            raise InputError("automatic evaluation needs both --auto and --task NAME (or --auto --model of a 3D "
                             "model: `medseg models`)")
        _universal_default(args)
        result = evaluate_auto(_predictor(args), args.dataset, args.task, args.split, args.limit,
                               progress=not args.no_progress)
    print_auto(result)
    if outputs["--json"] is not None:
        print(f"wrote {write_auto_json(result, outputs['--json'], overwrite=args.overwrite)}")
    return _failed(len(result["errors"]), len({r["stem"] for r in result["cases"]}) + len(result["errors"]))


def cmd_tasks(args: argparse.Namespace) -> int:
    from .models import build_model

    model = build_model(args.model, pretrained=args.checkpoint is None, checkpoint=args.checkpoint)
    source = args.checkpoint or f"the shipped {args.model!r} model"
    if not model.tasks:
        print(f"{source}: no tasks (train it with the 'universal' objective)")
        return 0
    print(f"{source} knows:")
    print(f"{'task':<22}{'modality':<22}{'window':<8}classes")
    for task in model.tasks.values():
        names = ", ".join(f"{k} {v}" for k, v in task.classes.items())
        print(f"{task.name:<22}{task.modality:<22}{task.window or '-':<8}{names}")
    return 0


def _evaluate_clicks(args: argparse.Namespace, predictor, outputs: dict[str, Path | None]) -> int:
    from .eval.interactive import evaluate_interactive, print_rounds, rounds_csv, save_rounds_figure
    from .io.outputs import write_text

    if args.rounds < 1:
        raise InputError("--rounds must be 1 or more")
    result = evaluate_interactive(predictor, args.dataset, split=args.split, rounds=args.rounds, limit=args.limit,
                                  progress=not args.no_progress, first=args.first)
    print_rounds(result)
    if outputs["--json"] is not None:
        import json

        print(f"wrote {write_text(outputs['--json'], json.dumps(result, indent=2) + chr(10))}")
    if outputs["--csv"] is not None:
        print(f"wrote {write_text(outputs['--csv'], rounds_csv(result))}")
    if outputs["--figure"] is not None:
        print(f"wrote {save_rounds_figure(result, outputs['--figure'], overwrite=args.overwrite)}")
    n_cases = len({c["stem"] for c in result["cases"]}) + len(result["skipped"]) + len(result["errors"])
    return _failed(len(result["errors"]), n_cases)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_CASES, fresh_folder
    from .infer.files import segment_file

    predictor = _predictor(args)
    out_dir = fresh_folder(args.out)
    if args.path is not None:
        cases = [(args.path, _own_demo_prompts(args), "your image")]
    else:
        cases = [(c.locate(), [("box", {"boxes": [list(c.box)]}), ("click", {"points": [list(c.click)]})], c.what)
                 for c in DEMO_CASES]
    print(f"medseg demo: {len(cases)} image(s), model {args.model}, outputs in {out_dir}")
    for path, prompts, what in cases:
        stem = Path(path).name.split(".")[0]
        print(f"  {what}:")
        for tag, prompt in prompts:
            if "boxes" in prompt and _is_volume(path):
                from .io import read_image

                (x0, y0, x1, y1), z = prompt["boxes"][0], read_image(path).array.shape[1] // 2
                prompt = {"boxes": [[x0, y0, z, x1, y1, z]]}
            result = segment_file(predictor, path, progress=False, **prompt)
            suffix = ".png" if result.labels.shape[0] == 1 else ".nii.gz"
            mask, ov = _write_outputs(result, out_dir / f"{stem}_{tag}_mask{suffix}",
                                      out_dir / f"{stem}_{tag}_overlay.png", False)
            score = f", predicted IoU {result.scores[0]:.2f}" if result.scores else ""
            print(f"    {_demo_prompt_text(tag, prompt)}: {int((result.labels > 0).sum())} pixels{score}\n"
                  f"      mask {mask}\n      overlay {ov}")
    return 0


def _own_demo_prompts(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """The demo's prompts on the user's PATH: --box and/or --point, else the central box."""
    prompts = []
    if args.box or not args.point:
        box = args.box
        if box is None:
            from .io import read_image

            h, w = read_image(args.path).array.shape[-2:]
            box = [w / 4, h / 4, 3 * w / 4, 3 * h / 4]
            print(f"  no --box given: using the central box {[round(v) for v in box]}")
        prompts.append(("box", {"boxes": [list(box)]}))
    if args.point:
        if _is_volume(args.path):
            raise InputError(f"{args.path}: a click on a volume is not supported yet; give --box")
        prompts.append(("click", {"points": [list(args.point)]}))
    return prompts


def _demo_prompt_text(tag: str, prompt: dict) -> str:
    values = prompt["boxes"][0] if tag == "box" else prompt["points"][0]
    return f"{'box' if tag == 'box' else 'one click at'} {[round(v) for v in values]}"


def _is_volume(path) -> bool:
    from .io import read_image

    return read_image(path).array.shape[1] > 1


def cmd_export(args: argparse.Namespace) -> int:
    from .engines import export_model

    model = _promptable_model(args, kinds=("promptable",), use="exported")
    info = export_model(model, args.out, args.model, args.precision, overwrite=args.overwrite)
    sizes = ", ".join(f"{f} {(args.out / f).stat().st_size / 1e6:.1f} MB" for f in (info.encoder_file, info.decoder_file))
    print(f"exported {args.model} ({args.precision}, weights {info.weights_sha256[:12]}) to {args.out}: {sizes}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import check_extra, run

    check_extra()  # before the model loads: a missing extra is said at once
    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port}: give 1..65535")
    if args.max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb {args.max_upload_mb}: give a positive size")
    if args.root is not None and not args.root.is_dir():
        raise InputError(f"--root {args.root}: not a folder; give the folder whose images the page may open")
    from .models.build import UNIVERSAL

    if args.model in _models_of("promptable-3d"):
        raise InputError(f"--model {args.model!r} is a promptable 3D model: serve it for 3D clicks with "
                         f"--volume-model {args.model} (--model is the 2D model of the page's boxes and clicks)")
    volume_models = _models_of("promptable-3d")
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
    predictor = _predictor(args, automatic=args.model in UNIVERSAL)
    return run(predictor, model_name=args.model, host=args.host, port=args.port, root=args.root,
               token=args.token, max_upload_mb=args.max_upload_mb, cache_size=args.cache_size,
               volume=_serve_volume_model(args))


def _serve_volume_model(args: argparse.Namespace):
    """The 3D clicks of ``medseg serve`` (:class:`~medseg.serve.state.VolumeModel`): ``--volume-model`` (checked
    by :func:`cmd_serve`) with ``--volume-checkpoint``, on the 2D model's device and engine. Without
    ``--volume-model``: litemedsam-3d when its shipped weights load, else 3D clicks are off (a note says why);
    a named model must load its shipped weights, or has none (random weights, with a note)."""
    from .errors import CheckpointError
    from .infer.volume_prompts import VolumePredictor
    from .models import build_model
    from .models.build import PROMPTABLE_3D, has_published_weights
    from .serve.state import VolumeModel

    name, checkpoint = args.volume_model, args.volume_checkpoint
    if name == "none":
        return VolumeModel(note=f"started with --volume-model none: start medseg serve with --volume-model NAME "
                                f"({', '.join(_models_of('promptable-3d'))})")
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
    predictor = VolumePredictor(model, device=_device(args.device), engine=args.engine, precision=args.precision,
                                threads=args.threads)
    return VolumeModel(predictor, name, weights, note="")


def cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models
    from .models.build import SHIPPED_DECODERS, VOLUMETRIC, has_published_weights, has_shipped_tasks

    for kind in ("promptable", "automatic", "universal", "promptable-3d", "pretraining"):
        for name in list_models(kind):
            notes = ["volumes"] if name in VOLUMETRIC else []
            notes += ["clicks and boxes in a volume"] if kind == "promptable-3d" else []
            notes += ["pretrained weights available"] if has_published_weights(name) else []
            note = ", ".join(notes)
            if note and name in SHIPPED_DECODERS:
                note += " (default: shipped click-trained decoder; --weights published for the original)"
            if note and has_shipped_tasks(name):
                note += " (shipped automatic head: `medseg tasks`)"
            print(f"{name:<20}{kind:<14}{note}".rstrip())
    return 0


MAX_OUTPUT_SIDE = 16384


def _output_side(text: str) -> int:
    """An --output-size side: an integer in 1..MAX_OUTPUT_SIDE (argparse reports anything else)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of pixels") from None
    if not 1 <= value <= MAX_OUTPUT_SIDE:
        raise argparse.ArgumentTypeError(f"{value} pixels: give a side from 1 to {MAX_OUTPUT_SIDE}")
    return value


class _Click(argparse.Action):
    """A repeatable click of 2 (X Y) or 3 (X Y Z) numbers; anything else is a usage error (exit 2)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) not in (2, 3):
            parser.error(f"{option_string} takes X Y (a picture) or X Y Z (a volume), got {len(values)} numbers")
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), values])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description="Universal, efficient medical image segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="segment real medical images shipped with the dependencies (or PATH)")
    p.add_argument("path", nargs="?", type=Path, help="an image or volume of your own (default: the built-in set)")
    p.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"), help="box for PATH")
    p.add_argument("--point", nargs=2, type=float, metavar=("X", "Y"), help="one positive click for PATH (2D)")
    p.add_argument("--out", type=Path, default=Path("medseg_demo"), help="output folder (a new one if it exists)")
    _model_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("predict", help="segment an image or volume from a box and/or clicks")
    p.add_argument("input", type=Path, help="PNG/JPEG/BMP/TIFF, NIfTI, MHA/NRRD, DICOM file or series folder")
    p.add_argument("--box", nargs="+", type=float, action="append", metavar="V",
                   help="X0 Y0 X1 Y1 (2D; repeat for several objects), or X0 Y0 Z0 X1 Y1 Z1 for a volume")
    p.add_argument("--point", nargs="+", type=float, action=_Click, metavar="V",
                   help="positive click X Y (2D), or X Y Z in a volume with a promptable 3D model (repeatable)")
    p.add_argument("--negative-point", nargs="+", type=float, action=_Click, metavar="V",
                   help="negative click X Y, or X Y Z in a volume (repeatable)")
    p.add_argument("--slices", nargs=2, type=int, metavar=("Z0", "Z1"), help="slice range for a 4-number box on a volume")
    p.add_argument("--key-slice", type=int, help="slice to start from with --propagate (default: middle)")
    p.add_argument("--propagate", action="store_true",
                   help="volumes: prompt each slice with the box of the previous slice's mask instead of the fixed box")
    p.add_argument("--modality", help="CT or MR: selects the intensity window (default: from the file)")
    p.add_argument("--multimask", action="store_true", help="predict 3 candidates and keep the best scored")
    p.add_argument("--output-size", nargs=2, type=_output_side, metavar=("WIDTH", "HEIGHT"),
                   help="2D pictures: write the mask on a grid of this size over the picture (a model with an "
                        "implicit decoder decodes it there; others upsample); default the picture's own pixels")
    p.add_argument("--mirror", action="store_true",
                   help="3D models (la-heart-3d, unet3d ...): average the 8 mirrored predictions (test-time augmentation)")
    p.add_argument("--prompts", type=Path, help="replay a session's prompts (medseg serve's 'Prompts JSON') to its label map")
    p.add_argument("--out", type=Path, help="mask file (.png for 2D; .nii.gz/.mha/.nrrd for volumes)")
    p.add_argument("--overlay", type=Path, help="PNG picture of the image with the mask and prompts")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never the input)")
    p.add_argument("--task", help="automatic mode, no prompt: segment every class of this task with the shipped "
                                  "universal model (or a universal --checkpoint); INPUT may be a folder of images "
                                  "(labels go to the --out folder); `medseg tasks` lists the tasks")
    _model_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score the model on a dataset with prompts from its ground truth")
    p.add_argument("dataset", type=Path, help="folder with images/ + masks/ (splits.json) or imagesTr/ + labelsTr/")
    p.add_argument("--split", default="test", help="test, val, train or all (default: test)")
    p.add_argument("--prompt", choices=("box", "point", "clicks"), default="box",
                   help="box or point: one prompt per component; clicks: interactive rounds (see --rounds)")
    p.add_argument("--rounds", type=int, default=5, help="with --prompt clicks: rounds of correction (default 5)")
    p.add_argument("--first", choices=("point", "box"), default="point",
                   help="with --prompt clicks: the first prompt of each object (later rounds add clicks)")
    p.add_argument("--limit", type=int, help="only the first N cases")
    p.add_argument("--json", type=Path, help="write the report as JSON")
    p.add_argument("--csv", type=Path, help="write one row per case and class as CSV")
    p.add_argument("--figure", type=Path, help="PNG with Dice per case and overlays of the best, median and worst case")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never the dataset's own)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--auto", action="store_true", help="automatic mode: no prompt, every class of --task, or of a 3D "
                                                       "--model's plan (e.g. --model la-heart-3d)")
    p.add_argument("--mirror", action="store_true", help="--auto with a 3D model: mirroring test-time augmentation")
    p.add_argument("--task", help="with --auto: the task (of the shipped universal model or a --checkpoint) "
                                  "the dataset belongs to")
    _model_args(p)
    p.set_defaults(func=cmd_evaluate)

    from .data.cli import add_data_parser
    from .train.cli import add_objective_parsers, add_train_parser

    add_train_parser(sub)
    add_objective_parsers(sub)
    add_data_parser(sub)

    p = sub.add_parser("export", help="write a promptable model as ONNX graphs (encoder + prompt decoder)")
    p.add_argument("model", help="registered model name (see `medseg models`), e.g. litemedsam, hr-small")
    p.add_argument("--out", type=Path, required=True, help="output folder: encoder.onnx, decoder.onnx, export.json")
    p.add_argument("--checkpoint", help="weights file instead of the model's pretrained ones")
    p.add_argument("--weights", choices=("shipped", "published"), default="shipped",
                   help="without --checkpoint: the shipped (default) or the published decoder")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="fp32 (default), fp16 (weights stored as float16) or int8 (the encoder's MatMul weights "
                        "quantised)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier export in --out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="interactive segmentation in the browser: a page and a JSON API (FastAPI)")
    p.add_argument("--root", type=Path, help="folder whose images the page may open (default: uploads only)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; another needs the token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="the token clients must send (default: generated when --host is not loopback)")
    p.add_argument("--max-upload-mb", type=float, default=512.0, help="largest upload accepted (413 past it)")
    p.add_argument("--cache-size", type=int, default=16, help="encoded slices kept (LRU); bounds the memory")
    p.add_argument("--volume-model", metavar="NAME",
                   help="promptable 3D model of the page's 3D clicks in volumes (litemedsam-3d, or "
                        "litemedsam-3d-tiny for tests); default litemedsam-3d when its shipped weights load, else 3D clicks are off; none: off")
    p.add_argument("--volume-checkpoint", type=Path, metavar="W",
                   help="weights of a volume_prompts training run for --volume-model (default: its shipped ones)")
    _model_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("tasks", help="list the tasks, modalities and classes a universal model knows")
    p.add_argument("--checkpoint", help="a universal model's .safetensors (default: the shipped model)")
    p.add_argument("--model", default="universal", help="its registered name (universal, universal-hr, ...)")
    p.set_defaults(func=cmd_tasks)
    return parser


def _warn(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line a person reads (``medseg: warning: ...``), not Python's file:line form."""
    print(f"medseg: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command; user mistakes and unwritable places end as one line on stderr, never a traceback.

    Exit status: 0 done, 1 done but some inputs failed (listed), 2 refused (bad input, nothing or
    only part written)."""
    import os
    import warnings

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads between calls (torch not imported yet)
    args = build_parser().parse_args(argv)
    shown = warnings.showwarning
    warnings.showwarning = _warn
    try:
        return args.func(args)
    except MedsegError as exc:
        print(f"medseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a disk that is full or read-only, a folder without permission
        where = f" {exc.filename}" if exc.filename else ""
        print(f"medseg {args.command}: error: cannot read or write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
