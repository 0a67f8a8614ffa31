"""``medseg export`` and ``medseg models``."""

from __future__ import annotations

import argparse

from .options import promptable_model


def cmd_export(args: argparse.Namespace) -> int:
    from ..engines import export_model

    model = promptable_model(args, kinds=("promptable",), use="exported")
    info = export_model(model, args.out, args.model, args.precision, overwrite=args.overwrite)
    sizes = ", ".join(f"{f} {(args.out / f).stat().st_size / 1e6:.1f} MB" for f in (info.encoder_file, info.decoder_file))
    print(f"exported {args.model} ({args.precision}, weights {info.weights_sha256[:12]}) to {args.out}: {sizes}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import list_models
    from ..models.build import SHIPPED_DECODERS, VOLUMETRIC, has_published_weights, has_shipped_tasks

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
