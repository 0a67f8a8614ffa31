"""Task files: which datasets a universal model learns, with their modality and classes.

A task file is YAML (or JSON), one entry per task::

    kvasir_seg:   {root: ../shared/data/kvasir_seg, modality: endoscopy}
    drishti_gs1_odoc:
      root: ../shared/data/drishti_gs1_odoc
      modality: fundus
      classes: {1: optic_disc, 2: optic_cup}
    ct_slices:    {root: ../shared/data/ct_organ_slices_demo, modality: CT, window: none}  # 8-bit PNGs

``root`` is relative to the task file. ``classes`` (label id -> name, background left out) default
to the dataset's class file (``classes.json``, ``labels.json``, ``dataset.json``), else to the label
values found in its masks (``class_<id>``). ``modality`` defaults to the dataset's own (nnU-Net
``channel_names``), else ``"unknown"``. Modality-aware normalisation (``window``): a CT or MR task's
images get the predictor's intensity window (:data:`medseg.data.preprocess.MODALITY_WINDOWS`: CT
Hounsfield window, MR percentiles) before min-max scaling; other modalities are min-max scaled only.
``window: none`` turns the window off (CT slices already windowed to 8-bit PNG); ``window: CT`` or
``MR`` sets it for any modality name. The model stores each task's window, so inference normalises
as training did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import InputError


@dataclass(frozen=True)
class TaskSource:
    """A task: its name, dataset folder, modality, classes {label id: name} (no background) and the
    intensity window its images get ("CT", "MR" or None: min-max only)."""

    name: str
    root: Path
    modality: str
    classes: dict[int, str]
    window: str | None = None

    @property
    def normalisation(self) -> str | None:
        """The ``modality`` argument of ``prepare_image``."""
        return self.window


def default_window(modality: str) -> str | None:
    """"CT" / "MR" for those modalities (their intensity windows), else None."""
    from medseg.data.preprocess import MODALITY_WINDOWS

    return modality.upper() if modality.upper() in MODALITY_WINDOWS else None


def _window(entry: dict, modality: str, where: str) -> str | None:
    from medseg.data.preprocess import MODALITY_WINDOWS

    if "window" not in entry:
        return default_window(modality)
    value = entry["window"]
    if value is None or value is False or str(value).lower() == "none":
        return None
    if str(value).upper() not in MODALITY_WINDOWS:
        raise InputError(f"{where}: window {value!r} is not one of {', '.join(MODALITY_WINDOWS)} or none")
    return str(value).upper()


def scan_label_values(root: Path, limit: int = 400) -> dict[int, str]:
    """Foreground label values found in up to ``limit`` masks of a dataset: {id: "class_<id>"}."""
    from medseg.data.datasets import dataset_cases
    from medseg.io import read_label

    values: set[int] = set()
    for case in dataset_cases(root, "all")[:limit]:
        values |= {int(v) for v in np.unique(read_label(case.mask_path).array) if v > 0}
    return {v: f"class_{v}" for v in sorted(values)}


def _classes(entry: dict, root: Path, where: str) -> dict[int, str]:
    from medseg.data.spec import read_classes

    given = entry.get("classes")
    if given is not None:
        if not isinstance(given, dict) or not given:
            raise InputError(f"{where}: 'classes' must map label ids to names, e.g. {{1: optic_disc}}")
        try:
            classes = {int(k): str(v) for k, v in given.items()}
        except (TypeError, ValueError):
            raise InputError(f"{where}: class ids must be integers, got {list(given)}") from None
    else:
        found = read_classes(root)
        classes = found[0] if found else scan_label_values(root)
    classes = {k: v for k, v in classes.items() if k != 0}
    if not classes:
        raise InputError(f"{where}: no foreground class (give 'classes: {{1: name}}')")
    return dict(sorted(classes.items()))


def load_tasks(path: str | Path) -> dict[str, TaskSource]:
    """The tasks of a task file, in file order.

    Raises InputError naming the file and entry: unreadable YAML, a missing ``root``, a root that is
    not a dataset folder, bad classes.
    """
    from medseg.data.layouts import open_dataset

    from medseg.data.spec import read_yaml

    path = Path(path)
    data = read_yaml(path, "task file")
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: a task file maps task names to {{root, modality, classes}}")
    tasks = {}
    for name, entry in data.items():
        where = f"{path}: task {name!r}"
        if not isinstance(entry, dict) or "root" not in entry:
            raise InputError(f"{where}: needs a 'root' (the dataset folder)")
        unknown = set(entry) - {"root", "modality", "classes", "window"}
        if unknown:
            raise InputError(f"{where}: unknown keys {sorted(unknown)}; valid: root, modality, classes, window")
        root = (path.parent / str(entry["root"])).resolve()
        if not root.is_dir():
            raise InputError(f"{where}: dataset folder {root} not found")
        spec = open_dataset(root, warn=False)
        modality = str(entry.get("modality") or spec.modality or "unknown")
        tasks[str(name)] = TaskSource(str(name), root, modality, _classes(entry, root, where),
                                      _window(entry, modality, where))
    return tasks
