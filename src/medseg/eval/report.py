"""The result of an evaluation: per-case rows, a summary, and JSON / CSV / table / figure output."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from medseg.data.datasets import dataset_files
from medseg.io.outputs import atomic_write, plan_outputs, write_text
from medseg.eval.metrics import METRIC_NAMES

COLUMNS = ("stem", "class_id", "class_name", "dice", "iou", "hd95", "nsd", "n_prompts", "empty_gt", "seconds")
"""Keys of every row of ``Report.cases``, in CSV column order."""

@dataclass
class Overlay:
    """One case kept for the figure: image (H, W) or (H, W, 3), bool gt and pred (H, W)."""

    title: str
    dice: float
    image: np.ndarray
    gt: np.ndarray
    pred: np.ndarray


def _mean(values: list[float]) -> float | None:
    """Mean of the finite values; None when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _clean(value: object) -> object:
    """JSON-safe value: NaN/inf -> None, numpy scalars -> Python scalars."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def csv_cell(value: object) -> object:
    """A value as a CSV cell: NaN/inf/None empty, numpy scalars as Python ones."""
    value = _clean(value)
    return "" if value is None else value


def _class_key(row: dict) -> str:
    """Key of a row's class in ``summary["per_class"]``: the class id as text, or "none"."""
    return "none" if row["class_id"] is None else str(row["class_id"])


def _natural(key: str) -> tuple[int, int]:
    """Class ids in numeric order, "none" last."""
    return (0, int(key)) if key.isdigit() else (1, 0)


def _means(rows: list[dict]) -> dict[str, float | None]:
    return {name: _mean([r[name] for r in rows]) for name in METRIC_NAMES}


@dataclass
class Report:
    """Evaluation result of one dataset split.

    ``cases`` has one row per (case, foreground class) with the keys of :data:`COLUMNS`:
    ``stem``, ``class_id`` (int, or None for an empty-GT case of a multi-class dataset),
    ``class_name``, ``dice``, ``iou``, ``hd95`` (NaN when exactly one of gt/pred is empty),
    ``nsd``, ``n_prompts`` (components prompted), ``empty_gt`` (the mask had no foreground) and
    ``seconds`` (set_image + predict time of the whole case, repeated on each of its rows).
    ``errors`` has ``{"stem", "message"}`` per case that could not be scored.
    ``overlays`` holds the few cases drawn by :meth:`save_figure`.
    """

    dataset: str
    split: str
    prompt: str
    cases: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    overlays: list[Overlay] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        """Means over rows (NaN HD95 left out), counts, and the same means per class.

        Keys: ``dice``, ``iou``, ``hd95``, ``nsd`` (None when there is nothing to average),
        ``n_cases`` (scored images), ``n_rows``, ``n_errors``, ``n_empty_gt``,
        ``n_hd95_undefined``, ``mean_seconds`` (per scored image), and ``per_class``:
        ``{str(class_id) or "none": {"class_name", "n", "dice", "iou", "hd95", "nsd"}}``.
        """
        seconds = {r["stem"]: r["seconds"] for r in self.cases}
        groups: dict[str, list[dict]] = {}
        for row in self.cases:
            groups.setdefault(_class_key(row), []).append(row)
        per_class = {
            key: {"class_name": rows[0]["class_name"], "n": len(rows), **_means(rows)}
            for key, rows in sorted(groups.items(), key=lambda kv: _natural(kv[0]))
        }
        return {
            **_means(self.cases),
            "n_cases": len(seconds),
            "n_rows": len(self.cases),
            "n_errors": len(self.errors),
            "n_empty_gt": sum(bool(r["empty_gt"]) for r in self.cases),
            "n_hd95_undefined": sum(not math.isfinite(r["hd95"]) for r in self.cases),
            "mean_seconds": _mean(list(seconds.values())),
            "per_class": per_class,
        }

    def to_dict(self) -> dict:
        """``{"dataset", "split", "prompt", "summary", "cases", "errors"}`` with NaN as None."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "prompt": self.prompt,
            "summary": self.summary,
            "cases": [{k: _clean(row[k]) for k in COLUMNS} for row in self.cases],
            "errors": [dict(e) for e in self.errors],
        }

    def protected(self) -> list[Path]:
        """What outputs may never be written into: the dataset's image/mask folders and every file at
        the top of the dataset folder (its split, class and spec files)."""
        return dataset_files(self.dataset)

    def check_output(self, path: str | Path, overwrite: bool = False) -> Path:
        """The output path, checked by the output policy (:func:`medseg.io.outputs.plan_outputs`)."""
        return plan_outputs({"output": path}, protected=self.protected(), overwrite=overwrite)["output"]

    def to_json(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` as JSON (NaN -> null), atomically; returns the path written.
        An existing file is replaced only with ``overwrite``."""
        target = self.check_output(path, overwrite)
        return write_text(target, json.dumps(_json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n")

    def to_csv(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write one CSV row per case row, columns :data:`COLUMNS`; NaN/None as empty cells (atomically)."""
        target = self.check_output(path, overwrite)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for row in self.cases:
            writer.writerow([csv_cell(row[k]) for k in COLUMNS])
        return write_text(target, out.getvalue())

    def print_table(self, file: TextIO | None = None, cases: bool = False) -> None:
        """Print per-class and overall means (and, with ``cases``, every row) as a text table."""
        out = file or sys.stdout
        summary = self.summary

        def fmt(value: float | None) -> str:
            return "   -  " if value is None or not math.isfinite(value) else f"{value:6.3f}"

        header = f"{'class':<24}{'n':>6}  {'dice':>6}  {'iou':>6}  {'hd95':>6}  {'nsd':>6}"
        print(f"{self.dataset} [{self.split}] prompt={self.prompt}", file=out)
        print(header, file=out)
        if cases:
            for r in self.cases:
                label = f"{r['stem']}:{r['class_name']}"[:23]
                print(f"{label:<24}{1:>6}  " + "  ".join(fmt(r[m]) for m in METRIC_NAMES), file=out)
            print("-" * len(header), file=out)
        for key, stats in summary["per_class"].items():
            label = f"{key} {stats['class_name']}"[:23]
            print(f"{label:<24}{stats['n']:>6}  " + "  ".join(fmt(stats[m]) for m in METRIC_NAMES), file=out)
        overall = "  ".join(fmt(summary[m]) for m in METRIC_NAMES)
        print(f"{'all':<24}{summary['n_rows']:>6}  {overall}", file=out)
        print(f"{summary['n_cases']} cases scored, {summary['n_errors']} errors", file=out)
        for error in self.errors:
            print(f"  error {error['stem']}: {error['message']}", file=out)

    def save_figure(self, path: str | Path, overlays: list[Overlay] | None = None, overwrite: bool = False) -> Path:
        """Write a PNG: Dice per row as a sorted bar chart, above overlays of a few cases.

        ``overlays`` defaults to :attr:`overlays` (best, median and worst case kept by
        ``evaluate_dataset``); pass ``[]`` for the bar chart alone.
        """
        from medseg.eval.figure import draw_report  # matplotlib only when a figure is wanted

        target = self.check_output(path, overwrite)
        return atomic_write(target, lambda tmp: draw_report(self, tmp, self.overlays if overlays is None else overlays))


def _json_safe(value: object) -> object:
    """Recursively replace NaN/inf by None and numpy scalars by Python ones."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return _clean(value)
