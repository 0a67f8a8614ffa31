"""Evaluation of promptable segmentation: prompt protocols over a dataset, metrics, reports.

Cases, masks and prompts derived from masks come from :mod:`medseg.data`.

    from medseg.eval import evaluate_dataset
    report = evaluate_dataset(predictor, "data/busi", split="test", prompt="box")
    report.print_table(); report.to_json("out/busi.json"); report.save_figure("out/busi.png")
"""

from medseg.eval.evaluate import evaluate_case, evaluate_dataset
from medseg.eval.metrics import case_metrics
from medseg.eval.report import Report

__all__ = [
    "Report",
    "case_metrics",
    "evaluate_case",
    "evaluate_dataset",
]
