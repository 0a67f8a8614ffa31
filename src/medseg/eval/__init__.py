"""Evaluation of promptable segmentation: prompts from ground truth, metrics, datasets, reports.

    from medseg.eval import evaluate_dataset
    report = evaluate_dataset(predictor, "data/busi", split="test", prompt="box")
    report.print_table(); report.to_json("out/busi.json"); report.save_figure("out/busi.png")
"""

from medseg.eval.datasets import Case, class_names, find_cases
from medseg.eval.evaluate import evaluate_case, evaluate_dataset
from medseg.eval.loader import io_loader
from medseg.eval.metrics import case_metrics
from medseg.eval.prompts import boxes_from_mask, components, points_from_mask
from medseg.eval.report import Report

__all__ = [
    "Case",
    "Report",
    "boxes_from_mask",
    "case_metrics",
    "class_names",
    "components",
    "evaluate_case",
    "evaluate_dataset",
    "find_cases",
    "io_loader",
    "points_from_mask",
]
