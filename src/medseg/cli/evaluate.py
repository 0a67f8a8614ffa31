"""``medseg evaluate`` (boxes, points, interactive clicks, automatic) and ``medseg tasks``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .options import failed_status, models_of, predictor_for, universal_default, volume_model


def _evaluate_outputs(args: argparse.Namespace) -> dict[str, Path | None]:
    """Every output of ``medseg evaluate``, checked before the model loads: never a dataset's own file."""
    from ..data.datasets import dataset_files
    from ..io.outputs import plan_outputs

    wanted = {"--json": args.json, "--csv": args.csv, "--figure": args.figure}
    return plan_outputs(wanted, protected=dataset_files(args.dataset), overwrite=args.overwrite)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..data.cases import modality_loader
    from ..data.datasets import dataset_cases

    dataset_cases(args.dataset, args.split)  # a wrong folder or split fails before the model loads
    outputs = _evaluate_outputs(args)
    from ..models.build import VOLUMETRIC

    if args.auto or args.task:
        return _evaluate_auto(args, outputs)
    if args.model in VOLUMETRIC:
        raise InputError(f"model {args.model!r} segments volumes with no prompt: add --auto")
    if args.model in models_of("promptable-3d") and args.prompt != "clicks":
        raise InputError(f"model {args.model!r} is evaluated with --prompt clicks (--first point or box, "
                         f"--rounds N; --rounds 1 --first box for a 3D box alone)")
    predictor = predictor_for(args)
    if args.prompt == "clicks":
        return _evaluate_clicks(args, predictor, outputs)
    from ..eval import evaluate_dataset

    report = evaluate_dataset(predictor, args.dataset, split=args.split, prompt=args.prompt, limit=args.limit,
                              progress=not args.no_progress, loader=modality_loader(args.modality),
                              overlays=outputs["--figure"] is not None)
    report.print_table()
    for name, write in (("--json", report.to_json), ("--csv", report.to_csv), ("--figure", report.save_figure)):
        if outputs[name] is not None:
            print(f"wrote {write(outputs[name], overwrite=args.overwrite)}")
    return failed_status(len(report.errors), report.summary["n_cases"] + len(report.errors))


def _evaluate_auto(args: argparse.Namespace, outputs: dict[str, Path | None]) -> int:
    from ..eval.automatic import (auto_csv, evaluate_auto, evaluate_volumes_auto, print_auto, save_auto_figure,
                                  write_auto_json)
    from ..io.outputs import write_text
    from ..models.build import VOLUMETRIC

    if args.model in VOLUMETRIC:
        if args.task:
            raise InputError(f"model {args.model!r} segments the classes of its own plan; drop --task")
        result = evaluate_volumes_auto(volume_model(args), args.dataset, args.split, args.limit,
                                       progress=not args.no_progress, mirror=args.mirror, name=args.model)
    else:
        if not (args.auto and args.task):
            raise InputError("automatic evaluation needs both --auto and --task NAME (or --auto --model of a 3D "
                             "model: `medseg models`)")
        universal_default(args)
        result = evaluate_auto(predictor_for(args), args.dataset, args.task, args.split, args.limit,
                               progress=not args.no_progress)
    print_auto(result)
    if outputs["--json"] is not None:
        print(f"wrote {write_auto_json(result, outputs['--json'], overwrite=args.overwrite)}")
    if outputs["--csv"] is not None:
        print(f"wrote {write_text(outputs['--csv'], auto_csv(result))}")
    if outputs["--figure"] is not None:
        print(f"wrote {save_auto_figure(result, outputs['--figure'])}")
    return failed_status(len(result["errors"]), len({r["stem"] for r in result["cases"]}) + len(result["errors"]))


def _evaluate_clicks(args: argparse.Namespace, predictor, outputs: dict[str, Path | None]) -> int:
    from ..data.cases import modality_loader
    from ..eval.interactive import evaluate_interactive, print_rounds, rounds_csv, save_rounds_figure
    from ..io.outputs import write_text

    if args.rounds < 1:
        raise InputError("--rounds must be 1 or more")
    result = evaluate_interactive(predictor, args.dataset, split=args.split, rounds=args.rounds, limit=args.limit,
                                  progress=not args.no_progress, first=args.first,
                                  loader=modality_loader(args.modality))
    print_rounds(result)
    if outputs["--json"] is not None:
        import json

        print(f"wrote {write_text(outputs['--json'], json.dumps(result, indent=2) + chr(10))}")
    if outputs["--csv"] is not None:
        print(f"wrote {write_text(outputs['--csv'], rounds_csv(result))}")
    if outputs["--figure"] is not None:
        print(f"wrote {save_rounds_figure(result, outputs['--figure'], overwrite=args.overwrite)}")
    n_cases = len({c["stem"] for c in result["cases"]}) + len(result["skipped"]) + len(result["errors"])
    return failed_status(len(result["errors"]), n_cases)


def cmd_tasks(args: argparse.Namespace) -> int:
    from ..models import build_model

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
