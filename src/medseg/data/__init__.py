"""medseg's dataset layer: read, check and convert segmentation datasets of three layouts.

    from medseg.data import open_dataset, check_dataset, convert_dataset
    spec = open_dataset("data/kvasir_seg")          # paired, HER-Seg or nnU-Net raw folder
    samples = spec.samples("train")                  # [Sample(stem, image_paths, label_path)]
    check_dataset("data/kvasir_seg", max_cases=10).print()
    convert_dataset("data/kvasir_seg", "out/Dataset001_Kvasir", to="nnunet")

Importing this package is cheap: the checker and converter (which read pixels through
:mod:`medseg.io`) are loaded on first use.
"""

from __future__ import annotations

from typing import Any

from medseg.data.layouts import LAYOUTS, Sample, Scan, detect_layout, open_dataset
from medseg.data.spec import DatasetSpec

_LAZY = {
    "CheckReport": "medseg.data.check",
    "check_dataset": "medseg.data.check",
    "convert_dataset": "medseg.data.convert",
}

__all__ = ["LAYOUTS", "CheckReport", "DatasetSpec", "Sample", "Scan", "check_dataset",
           "convert_dataset", "detect_layout", "open_dataset"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medseg.data' has no attribute {name!r}")
