"""``medseg train``: command-line front end of :func:`medseg.train.train`.

    medseg train CONFIG.yaml [--set key=value ...] [--run-dir DIR] [--overwrite]
    medseg train --resume RUN_DIR [--set train.epochs=20 ...]
    medseg distill CONFIG.yaml ...   (the same, objective "distill")
    medseg pretrain CONFIG.yaml ...  (the same, objective "mae")
    torchrun --nproc_per_node 2 -m medseg.train CONFIG.yaml ...   (same arguments, several processes)

``medseg.cli.parser`` wires it in with ``add_train_parser(subparsers)``; ``python -m medseg.train``
runs the same command on its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medseg.errors import InputError, MedsegError


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", type=Path, help="YAML config (see configs/); not needed with --resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=3e-4 --set data.root=DIR (repeatable)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue RUN_DIR from latest.* with RUN_DIR/config.yaml (then --set)")
    p.add_argument("--run-dir", type=Path, help="output folder (default: train.run_dir, else runs/<config name>)")
    p.add_argument("--overwrite", action="store_true", help="start again in a run folder that is not empty")
    p.set_defaults(func=cmd_train)


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``medseg``'s subparsers; returns its parser."""
    p = subparsers.add_parser("train", help="train or fine-tune a model from a YAML config (torchrun for DDP)",
                              description="Train or fine-tune a model from a YAML config: defaults < YAML < --set. "
                                          "Under torchrun it runs data-parallel (DDP).")
    _add_arguments(p)
    return p


# Commands that are `medseg train` restricted to one objective: name -> (objective, help, description).
OBJECTIVE_COMMANDS = {
    "distill": ("distill", "distil a student image encoder from a teacher's embeddings",
                "Decoupled distillation: the student's image encoder learns the teacher's embedding "
                "(configs/distill_hr_small.yaml); the same loop, checkpoints and --resume as `medseg train`."),
    "pretrain": ("mae", "masked-autoencoder pre-training of a 3D ViT encoder on unlabeled/train volumes",
                 "Hi-End-MAE pre-training (configs/mae_3d.yaml): 75% of the tokens hidden, a decoder reading several "
                 "encoder depths reconstructs them; the same loop, checkpoints and --resume as `medseg train`."),
}


def add_objective_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distill`` and ``pretrain``: the train command's arguments, one objective each."""
    for name, (objective, help_text, description) in OBJECTIVE_COMMANDS.items():
        p = subparsers.add_parser(name, help=help_text, description=description)
        _add_arguments(p)
        p.set_defaults(func=cmd_objective, command_objective=(name, objective))


def cmd_objective(args: argparse.Namespace) -> int:
    """``medseg distill`` / ``medseg pretrain``: ``medseg train``, after checking the config's objective."""
    name, objective = args.command_objective
    config, _, _ = resolve(args)
    if config.train.objective != objective:
        raise InputError(f"medseg {name} runs objective {objective!r}, but the config says train.objective: "
                         f"{config.train.objective!r}; use `medseg train` for it, or set train.objective: {objective}")
    return cmd_train(args)


def _with_environment(config):
    """The config with what the environment says where the config is silent: the embedding cache
    folder from ``$MEDSEG_EMBEDDING_CACHE`` (the only place medseg reads it)."""
    import dataclasses
    import os

    from medseg.train.embeddings import CACHE_ENV

    if config.train.cache_dir is None and os.environ.get(CACHE_ENV):
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, cache_dir=os.environ[CACHE_ENV]))
    return config


def resolve(args: argparse.Namespace):
    """(config, run_dir, resume) of parsed ``train`` arguments."""
    from medseg.train.config import load_config

    if args.resume is not None:
        if args.run_dir is not None and Path(args.run_dir) != Path(args.resume):
            raise InputError("--resume RUN_DIR already names the run folder; drop --run-dir")
        if args.overwrite:
            raise InputError("give either --resume or --overwrite, not both")
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise InputError(f"cannot resume {args.resume}: {saved} not found (is it a run folder?)")
        if args.config is not None:
            print(f"note: resuming with {saved}; {args.config} is not read", file=sys.stderr)
        return _with_environment(load_config(saved, args.overrides)), Path(args.resume), True
    if args.config is None:
        raise InputError("give a config file (medseg train CONFIG.yaml) or --resume RUN_DIR")
    config = _with_environment(load_config(args.config, args.overrides))
    run_dir = args.run_dir or config.train.run_dir or Path("runs") / Path(args.config).name.split(".")[0]
    return config, Path(run_dir), False


def cmd_train(args: argparse.Namespace) -> int:
    from medseg.train.loop import run_summary, train

    config, run_dir, resume = resolve(args)
    result = train(config, run_dir, resume=resume, overwrite=args.overwrite)
    from medseg.train.ddp import from_env

    if from_env().is_main:
        summary = run_summary(result)
        epochs, best = summary["epochs"], summary["best_val_dice"]
        print(f"done: {epochs} epoch{'s' if epochs != 1 else ''}, best val Dice "
              f"{'-' if best is None else f'{best:.4f}'} -> {summary['checkpoint']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m medseg.train CONFIG.yaml ...``: the ``medseg train`` command on its own."""
    parser = argparse.ArgumentParser(prog="medseg train", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MedsegError as exc:
        print(f"medseg train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
