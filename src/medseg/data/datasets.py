"""The cases of a dataset folder, for every stage (evaluation, training, distillation, caches).

* :func:`dataset_cases`: the cases of a split of a dataset folder of any layout of
  :mod:`medseg.data.layouts` (``images/`` + ``masks/``, ``imagesTr/`` + ``labelsTr/``, HER-Seg,
  nnU-Net raw). ``split`` is a split of the folder's split file, or ``"all"``; without a split
  file every split means all cases.
* :func:`image_cases`: every image file under a plain folder (unlabelled images, for distillation).
* :func:`source_cases`: a dataset's split when the folder is a dataset, else its image files.
* :func:`class_names`: class id -> name from the folder's class file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.cases import Case
from medseg.data.layouts import PICTURE_SUFFIXES, detect_layout, missing_cases, open_dataset
from medseg.data.spec import read_classes
from medseg.errors import InputError


def dataset_cases(root: str | Path | None, split: str = "all", limit: int | None = None,
                  labelled: bool = True) -> list[Case]:
    """Cases of ``split`` in a dataset folder (split-file order; natural stem order for "all").

    Args:
        root: the dataset folder.
        split: a split of the folder's split file, or ``"all"``.
        limit: the first ``limit`` cases only.
        labelled: keep only cases with a mask file.

    Raises:
        InputError: no folder given, the folder has no known layout, the split is unknown (the
            message lists the available ones), or the selection is empty.
    """
    if root is None:
        raise InputError("no dataset folder given: set data.root (--set data.root=DATASET_DIR) or name one")
    return _split_of(open_dataset(root), split, limit, labelled)


def _split_of(spec, split: str, limit: int | None, labelled: bool) -> list[Case]:
    cases = spec.samples(split if spec.has_split_file else "all", labelled=labelled)
    return cases[:limit] if limit else cases


def evaluation_cases(root: str | Path, split: str = "all", limit: int | None = None
                     ) -> tuple[list[Case], dict[str, str]]:
    """(the labelled cases of ``split``, {stem: what is missing} of the cases it cannot score): an
    evaluation counts the second as failures instead of warning about them (without ``limit``, which
    takes the first cases only)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the missing ones are returned, not warned about
        spec = open_dataset(root)
        cases = _split_of(spec, split, limit, labelled=True)
    return cases, {} if limit else missing_cases(spec, split)


def image_cases(folder: str | Path, limit: int | None = None) -> list[Case]:
    """Every picture file under a plain folder, as unlabelled cases with stems relative to it ("sub/name")."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{root} holds no images ({', '.join(PICTURE_SUFFIXES)}) and is not a dataset folder")
    cases = [Case(str(p.relative_to(root).with_suffix("")), (p,)) for p in files]
    return cases[:limit] if limit else cases


def is_dataset(folder: str | Path) -> bool:
    """Whether ``folder`` has a dataset layout that :func:`dataset_cases` reads."""
    try:
        detect_layout(Path(folder))
    except InputError:
        return False
    return True


def source_cases(folder: str | Path, split: str = "train", limit: int | None = None) -> list[Case]:
    """Images of a source folder: the labelled cases of ``split`` of a dataset (all of them when it
    has no such split), else every picture under a plain folder (:func:`image_cases`)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    if not is_dataset(root):
        return image_cases(root, limit)
    spec = open_dataset(root)
    chosen = split if spec.has_split_file and split in spec.splits else "all"
    cases = spec.samples(chosen, labelled=True)
    return cases[:limit] if limit else cases


def class_names(dataset_dir: str | Path) -> dict[int, str]:
    """Class id -> name from the folder's class file; {} when there is none (or no dataset)."""
    root = Path(dataset_dir)
    if not is_dataset(root):
        return {}
    found = read_classes(root)
    return found[0] if found else {}


DATA_FOLDERS = ("images", "masks", "imagesTr", "labelsTr", "imagesTs", "labelsTs", "image_1024", "mask_1024")
"""Folders of a dataset that outputs may never be written into."""

DATASET_FILES = ("splits.json", "splits_final.json", "classes.json", "labels.json", "dataset.json", "spec.json")
"""Files a dataset folder may hold that decide what it is: never an output, present or not."""


def dataset_files(dataset: str | Path) -> list[Path]:
    """A dataset folder's own files, which no output may replace (the output policy's ``protected``):
    its data folders, the files that define it (:data:`DATASET_FILES`, present or not) and every
    other file at its top level."""
    root = Path(dataset).expanduser()
    found = [root / name for name in DATA_FOLDERS + DATASET_FILES]
    if root.is_dir():
        found += [p for p in root.iterdir() if p.is_file()]
    return found


def evenly_spaced(cases: list, n: int | None) -> list:
    """``n`` items spread evenly over ``cases`` (first and last included); all of them when n is None
    or at least their number. The sampling of every benchmark's ``--quick`` and ``--limit``."""
    if n is None or len(cases) <= n:
        return list(cases)
    return [cases[i] for i in np.linspace(0, len(cases) - 1, n).round().astype(int)]


def write_subset(source: str | Path, target: str | Path, counts: dict[str, int]) -> Path:
    """A new paired dataset folder of symbolic links to ``counts[split]`` evenly spaced cases of each
    split of ``source`` (images/ + masks/ + splits.json): a small, faithful copy for quick runs.

    Raises:
        InputError: ``target`` exists, or a split of ``counts`` is not in ``source``.
    """
    import json

    target = Path(target)
    if target.exists():
        raise InputError(f"{target} exists; choose a new folder for the subset")
    chosen = {split: evenly_spaced(dataset_cases(source, split), n) for split, n in counts.items()}
    (target / "images").mkdir(parents=True)
    (target / "masks").mkdir()
    for cases in chosen.values():
        for case in cases:
            (target / "images" / case.image_path.name).symlink_to(case.image_path.resolve())
            (target / "masks" / case.mask_path.name).symlink_to(case.mask_path.resolve())
    (target / "splits.json").write_text(json.dumps({s: [c.stem for c in cases] for s, cases in chosen.items()}))
    return target
