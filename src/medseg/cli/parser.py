"""The ``medseg`` parser and ``main``: user mistakes end as one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import MedsegError
from .demo import cmd_demo
from .evaluate import cmd_evaluate, cmd_tasks
from .models import cmd_export, cmd_models
from .postprocess import cmd_postprocess
from .options import every_slice_arg, model_args
from .predict import cmd_predict
from .serve import cmd_serve


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
    model_args(p)
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
    every_slice_arg(p)
    p.add_argument("--prompts", type=Path, help="replay a session's prompts (medseg serve's 'Prompts JSON') to its label map")
    p.add_argument("--out", type=Path, help="mask file (.png for 2D; .nii.gz/.mha/.nrrd for volumes)")
    p.add_argument("--overlay", type=Path, help="PNG picture of the image with the mask and prompts")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never the input)")
    p.add_argument("--task", help="automatic mode, no prompt: segment every class of this task with the shipped "
                                  "universal model (or a universal --checkpoint); INPUT may be a folder of images "
                                  "(labels go to the --out folder); `medseg tasks` lists the tasks")
    model_args(p)
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
    p.add_argument("--modality", help="CT or MR for every case: selects the intensity window where the files "
                                      "carry no modality (NIfTI); default: from the files (evaluate a mixed set "
                                      "apart)")
    every_slice_arg(p)
    p.add_argument("--task", help="with --auto: the task (of the shipped universal model or a --checkpoint) "
                                  "the dataset belongs to")
    model_args(p)
    p.set_defaults(func=cmd_evaluate)

    from ..data.cli import add_data_parser
    from ..train.cli import add_objective_parsers, add_train_parser

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
    model_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("postprocess", help="decide on val which classes of a 3D model keep only their largest "
                                           "connected component; write the weights with that decision")
    p.add_argument("dataset", type=Path, help="3D dataset folder (imagesTr/ + labelsTr/ with splits.json)")
    p.add_argument("--model", required=True, help="a planned 3D model (la-heart-3d, acdc-3d, unet3d ...)")
    p.add_argument("--checkpoint", help="its weights (default: the shipped ones)")
    p.add_argument("--out", type=Path, required=True, help="the weights with the decision in their plan (.safetensors)")
    p.add_argument("--split", default="val", help="the split that decides (default: val; never test)")
    p.add_argument("--limit", type=int, help="only the first N volumes")
    p.add_argument("--json", type=Path, help="the per-class Dice and the decision as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never the input)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.set_defaults(func=cmd_postprocess)

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
