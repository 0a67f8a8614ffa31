"""Evaluation figure: sorted Dice bar chart plus overlays, drawn with matplotlib's Agg canvas.

The figure is built on ``matplotlib.figure.Figure`` with ``FigureCanvasAgg`` directly, so it
never touches pyplot's global backend or open windows. It reads a report and its overlays by
their fields (``cases``, ``summary``, ``dataset``, ``split``, ``prompt``; ``title``, ``dice``,
``image``, ``gt``, ``pred``) and imports nothing of medseg, so :mod:`medseg.eval.report` can load
it (and matplotlib) only when a figure is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

GT_COLOUR = "#00e000"
PRED_COLOUR = "#ff3030"
_MAX_LABELLED_BARS = 40


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Image ready for imshow: (H, W) with a gray colormap, or (H, W, 3) uint8 as is."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image, "gray"
    if image.dtype != np.uint8:
        low, high = float(image.min()), float(image.max())
        image = ((image - low) / (high - low or 1.0) * 255).astype(np.uint8)
    return image[..., :3], None


def _draw_bars(ax, report: Any) -> None:
    """Dice of every row, sorted ascending; rows of empty ground truth drawn hatched."""
    rows = sorted(report.cases, key=lambda r: r["dice"])
    dice = [r["dice"] for r in rows]
    bars = ax.bar(range(len(rows)), dice, color="#4878d0", width=0.85)
    for bar, row in zip(bars, rows):
        if row["empty_gt"]:
            bar.set_hatch("//")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.6, max(len(rows), 1) - 0.4)
    ax.set_ylabel("Dice")
    mean = report.summary["dice"]
    if mean is not None:
        ax.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
        ax.legend(loc="lower right")
    if len(rows) <= _MAX_LABELLED_BARS:
        ax.set_xticks(range(len(rows)))
        one_class = len(report.summary["per_class"]) <= 1
        labels = [r["stem"] if one_class else f"{r['stem']}:{r['class_name']}" for r in rows]
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{len(rows)} cases, sorted by Dice (hatched: empty ground truth)")
    prompting = "no prompt" if report.prompt == "none" else f"{report.prompt} prompts"
    ax.set_title(f"{Path(report.dataset).name} [{report.split}], {prompting}: Dice per case")


def _outline(ax, mask: np.ndarray, colour: str, width: float) -> None:
    """Contour of a bool (H, W) mask in pixel coordinates; padded so image edges are outlined too."""
    if not mask.any():
        return
    height, width_px = mask.shape
    padded = np.pad(mask.astype(np.float32), 1)
    xs, ys = np.arange(-1, width_px + 1), np.arange(-1, height + 1)
    ax.contour(xs, ys, padded, levels=[0.5], colors=[colour], linewidths=width)


def _draw_overlay(ax, overlay: Any) -> None:
    """Image with the ground-truth contour (green) and the prediction tinted and outlined (red)."""
    image, cmap = _display_image(overlay.image)
    ax.imshow(image, cmap=cmap, interpolation="nearest")
    pred = np.asarray(overlay.pred, dtype=bool)
    gt = np.asarray(overlay.gt, dtype=bool)
    tint = np.zeros(pred.shape + (4,), dtype=np.float32)
    tint[pred] = (1.0, 0.19, 0.19, 0.35)
    ax.imshow(tint, interpolation="nearest")
    _outline(ax, gt, GT_COLOUR, 1.2)
    _outline(ax, pred, PRED_COLOUR, 1.0)
    ax.set_title(f"{overlay.title}\nDice {overlay.dice:.3f}", fontsize=9)
    ax.set_axis_off()


def draw_report(report: Any, path: Path, overlays: list[Any]) -> None:
    """Write the figure of ``report`` to ``path`` as PNG (bar chart on top, overlays below)."""
    n_over = len(overlays)
    fig = Figure(figsize=(max(8.0, 3.2 * n_over), 3.6 + (3.4 if n_over else 0.0)), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if n_over else 1, max(n_over, 1), height_ratios=[1, 1] if n_over else [1])
    _draw_bars(fig.add_subplot(grid[0, :]), report)
    for col, overlay in enumerate(overlays):
        _draw_overlay(fig.add_subplot(grid[1, col]), overlay)
    if n_over:
        fig.text(0.01, 0.01, "green: ground truth   red: prediction", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
