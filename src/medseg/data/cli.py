"""``medseg data check``, ``medseg data convert`` and ``medseg data plan``: the dataset commands.

``add_data_parser(subparsers)`` adds them to the ``medseg`` parser; each command function takes the
parsed ``argparse.Namespace`` and returns the exit code (0 fine, 1 check found errors, 2 bad input).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medseg.errors import InputError

TARGETS = ("paired", "nnunet", "herseg")


def cmd_check(args: argparse.Namespace) -> int:
    """Check a dataset folder, print the report (and write --json); 1 when errors were found."""
    from medseg.data.check import check_dataset
    from medseg.data.datasets import dataset_files
    from medseg.io.outputs import plan_outputs

    try:
        overwrite = getattr(args, "overwrite", False)
        plan_outputs({"--json": args.json}, protected=dataset_files(args.dir), overwrite=overwrite)
        report = check_dataset(args.dir, split=args.split, max_cases=args.limit,
                               progress=not getattr(args, "no_progress", False))
        report.print()
        if args.json is not None:
            print(f"wrote {report.to_json(args.json, overwrite=overwrite)}")
    except InputError as exc:
        print(f"medseg data check: error: {exc}", file=sys.stderr)
        return 2
    return 0 if report.ok else 1


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a dataset folder to another layout and print where it went."""
    from medseg.data.convert import convert_dataset

    try:
        spec = convert_dataset(args.src, args.dst, to=args.to, overwrite=args.overwrite,
                               dataset_id=getattr(args, "dataset_id", None),
                               progress=not getattr(args, "no_progress", False))
    except InputError as exc:
        print(f"medseg data convert: error: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{name} {len(stems)}" for name, stems in spec.splits.items())
    print(f"wrote {spec.layout} dataset {spec.name!r} to {spec.root} ({len(spec.samples('all'))} "
          f"samples; splits: {counts})")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Fingerprint a 3D dataset's split, print its plan (and write --json: the plan and its fingerprint)."""
    import json

    from medseg.data.datasets import dataset_cases, dataset_files
    from medseg.data.layouts import open_dataset
    from medseg.data.planning import PATCH_VOXELS, fingerprint, make_plan
    from medseg.io.outputs import plan_outputs, write_text

    try:
        overwrite = getattr(args, "overwrite", False)
        plan_outputs({"--json": args.json}, protected=dataset_files(args.dir), overwrite=overwrite)
        if args.patch_voxels is not None and args.patch_voxels < 16 ** 3:
            raise InputError(f"--patch-voxels {args.patch_voxels}: give at least 4096 (16^3)")
        modality = args.modality or open_dataset(args.dir, warn=False).modality
        cases = dataset_cases(args.dir, args.split, limit=args.limit)
        fp = fingerprint(cases, modality=modality, progress=not getattr(args, "no_progress", False))
        plan = make_plan(fp, patch_voxels=args.patch_voxels or PATCH_VOXELS, target_spacing=args.spacing)
    except InputError as exc:
        print(f"medseg data plan: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dir} ({args.split}: {len(cases)} volumes, modality {modality or 'not given (z-score)'})")
    print(plan.describe())
    if args.json is not None:
        text = json.dumps({"plan": plan.to_dict(), "fingerprint": fp.to_dict()}, indent=1)
        print(f"wrote {write_text(args.json, text + chr(10))}")
    return 0


def add_data_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data check`` and ``data convert`` to ``subparsers``; returns the ``data`` parser.

    Each leaf parser sets ``func`` to its command function (call ``args.func(args)``).
    """
    data = subparsers.add_parser("data", help="check and convert datasets (paired, HER-Seg, nnU-Net)")
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("check", help="find unpaired, unreadable, mismatched or mislabelled files")
    p.add_argument("dir", type=Path, help="dataset folder: images/ + masks/, imagesTr/ + labelsTr/, "
                                          "HER-Seg image_1024/ + mask_1024/, or nnU-Net DatasetXXX_Name/")
    p.add_argument("--split", default="all", help="split to read (train, val, test ...; default: all)")
    p.add_argument("--limit", type=int, help="read only the first N samples of the split")
    p.add_argument("--json", type=Path, help="also write the report as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("convert", help="rewrite a dataset in another layout (splits and classes kept)")
    p.add_argument("src", type=Path, help="dataset folder of any layout (only read)")
    p.add_argument("dst", type=Path, help="new dataset folder (for nnunet: the DatasetXXX_Name folder "
                                          "or an nnUNet_raw folder to create it in)")
    p.add_argument("--to", required=True, choices=TARGETS, help="target layout")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output dataset")
    p.add_argument("--dataset-id", type=int, help="nnU-Net dataset id (default: next free one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("plan", help="3D planning: target spacing, normalisation and patch size from a fingerprint")
    p.add_argument("dir", type=Path, help="3D dataset folder (imagesTr/ + labelsTr/, nnU-Net raw, ...)")
    p.add_argument("--split", default="train", help="split to plan from (default: train; never test)")
    p.add_argument("--modality", help="CT (clip + foreground z-score) or another (z-score per volume); "
                                      "default: what the dataset says")
    p.add_argument("--patch-voxels", type=int, help="voxel budget of patch x batch (default 96^3)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="target spacing in mm instead of the median (coarser: a patch holds more of the organ)")
    p.add_argument("--limit", type=int, help="read only the first N volumes of the split")
    p.add_argument("--json", type=Path, help="also write the plan and its fingerprint as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_plan)
    return data
