"""medseg's dataset layer: the one case type, datasets of three layouts (read, check, convert),
masks and the prompts derived from them, preprocessing and augmentation.

    from medseg.data import dataset_cases, load_case, open_dataset, check_dataset, convert_dataset
    cases = dataset_cases("data/kvasir_seg", "train")  # [Case(stem, image_paths, mask_path, patch)]
    image, label = load_case(cases[0])                 # Image (C, Z, Y, X), Label (Z, Y, X), checked
    spec = open_dataset("data/kvasir_seg")             # paired, HER-Seg or nnU-Net raw folder
    check_dataset("data/kvasir_seg", max_cases=10).print()
    convert_dataset("data/kvasir_seg", "out/Dataset001_Kvasir", to="nnunet")

Importing this package is cheap: the checker and converter (which read pixels through
:mod:`medseg.io`) are loaded on first use.
"""

from __future__ import annotations

from typing import Any

from medseg.data.cases import Case, load_case, plane
from medseg.data.datasets import class_names, dataset_cases, source_cases
from medseg.data.layouts import LAYOUTS, detect_layout, open_dataset, spec_from_json
from medseg.data.spec import DatasetSpec, Scan

_LAZY = {
    "CheckReport": "medseg.data.check",
    "check_dataset": "medseg.data.check",
    "convert_dataset": "medseg.data.convert",
}

__all__ = ["LAYOUTS", "Case", "CheckReport", "DatasetSpec", "Scan", "check_dataset", "class_names",
           "convert_dataset", "dataset_cases", "detect_layout", "load_case", "open_dataset", "plane",
           "source_cases", "spec_from_json"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medseg.data' has no attribute {name!r}")
