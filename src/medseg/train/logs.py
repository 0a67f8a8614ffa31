"""What a run writes besides checkpoints: ``metrics.csv`` (one row per epoch), ``steps.csv`` (one row
per optimizer step), TensorBoard events under ``tensorboard/`` (only when ``torch.utils.tensorboard``
imports) and ``curves.png`` (loss and Dice per epoch). Floats are written with ``repr`` so a resumed
run reads them back exactly. Only the main process writes (``enabled=False`` elsewhere).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from medseg.io.outputs import write_bytes

EPOCH_COLUMNS = ("epoch", "step", "train_loss", "val_dice", "lr", "seconds")
STEP_COLUMNS = ("step", "epoch", "loss", "lr")
ARTIFACTS = ("metrics.csv", "steps.csv", "curves.png", "config.yaml")


def _parse(value: str) -> float | int | None:
    if value == "":
        return None
    return int(value) if value.lstrip("-").isdigit() else float(value)


def read_rows(path: Path, upto: tuple[str, int] | None = None) -> list[dict]:
    """Rows of a CSV written here (numbers parsed); with ``upto=(column, n)`` only rows with column <= n."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return [r for r in rows if upto is None or r[upto[0]] <= upto[1]]


def _write_rows(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else repr(row[k]) for k in columns})
    write_bytes(path, text.getvalue().encode("utf-8"))


class RunLog:
    """Epoch and step logs of one run folder; on resume, rows past the checkpoint are dropped."""

    def __init__(self, run_dir: Path, enabled: bool, resume_epoch: int = 0, resume_step: int = 0) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.epochs = read_rows(self.run_dir / "metrics.csv", ("epoch", resume_epoch)) if resume_epoch else []
        self.steps = read_rows(self.run_dir / "steps.csv", ("step", resume_step)) if resume_step else []
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: skip silently
                self.tb = None

    def step(self, step: int, epoch: int, loss: float, lr: float, parts: dict[str, float], log: bool) -> None:
        """Record optimizer step ``step`` (1-based); TensorBoard gets it when ``log``."""
        row = {"step": step, "epoch": epoch, "loss": loss, "lr": lr}
        self.steps.append(row)
        if self.tb is not None and log:
            self.tb.add_scalar("train/loss", loss, step)
            self.tb.add_scalar("train/lr", lr, step)
            for name, value in parts.items():
                self.tb.add_scalar(f"train/{name}", value, step)

    def epoch(self, row: dict) -> None:
        """Record one epoch row (EPOCH_COLUMNS) and rewrite metrics.csv, steps.csv and curves.png."""
        self.epochs.append(row)
        if not self.enabled:
            return
        _write_rows(self.run_dir / "metrics.csv", EPOCH_COLUMNS, self.epochs)
        _write_rows(self.run_dir / "steps.csv", STEP_COLUMNS, self.steps)
        if self.tb is not None:
            if row["val_dice"] is not None:
                self.tb.add_scalar("val/dice", row["val_dice"], row["step"])
            if row["train_loss"] is not None:  # epoch 0 (the starting weights) has no training loss
                self.tb.add_scalar("train/epoch_loss", row["train_loss"], row["step"])
            self.tb.flush()
        write_bytes(self.run_dir / "curves.png", curves_png(self.epochs))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def curves_png(rows: list[dict]) -> bytes:
    """PNG bytes of train loss and validation Dice against the epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3), dpi=80)
    FigureCanvasAgg(fig)
    loss_ax, dice_ax = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.17, top=0.9, wspace=0.25)  # cheaper than tight_layout
    trained = [r for r in rows if r.get("train_loss") is not None]  # epoch 0 (starting weights) has none
    loss_ax.plot([r["epoch"] for r in trained], [r["train_loss"] for r in trained], "o-", color="tab:blue")
    loss_ax.set(title="train loss", xlabel="epoch")
    val = [r for r in rows if r.get("val_dice") is not None]
    dice_ax.plot([r["epoch"] for r in val], [r["val_dice"] for r in val], "o-", color="tab:green")
    dice_ax.set(title="validation Dice", xlabel="epoch", ylim=(0, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
