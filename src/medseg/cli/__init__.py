"""``medseg <stage>``: one subcommand per stage (demo, predict, evaluate, train, data, export, models, tasks, serve).

``parser`` builds the parser and runs a command (``main``); ``options`` holds what the commands share (the
model options, the predictor they ask for, writing a result); one module per command family: ``predict``,
``evaluate`` (and ``tasks``), ``demo``, ``serve``, ``models`` (and ``export``). Training and data commands
live with their packages (``medseg.train.cli``, ``medseg.data.cli``). Nothing heavy is imported here:
``medseg --help`` loads no torch.
"""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
