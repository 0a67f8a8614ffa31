"""Find the (image, mask) cases of a dataset folder, for evaluation.

The folder may have any layout of :mod:`medseg.data.layouts` (``images/`` + ``masks/``,
``imagesTr/`` + ``labelsTr/``, HER-Seg, nnU-Net raw); scanning and split files are handled there.

* ``split`` is a split of the folder's split file (``splits.json``, HER-Seg
  ``<name>_data_split.json``, nnU-Net ``splits_final.json`` fold 0 / ``imagesTs``), or ``"all"``.
  Without a split file every split means all cases.
* Class names come from ``classes.json``, ``labels.json`` or the ``labels`` of ``dataset.json``.

Files without a partner are skipped with one warning that lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medseg.data.layouts import EXPECTED, detect_layout, open_dataset
from medseg.data.spec import read_classes
from medseg.errors import InputError

__all__ = ["EXPECTED", "Case", "class_names", "find_cases"]


@dataclass(frozen=True)
class Case:
    """One evaluation case: an image file (the first channel) and its ground-truth mask file."""

    stem: str
    image_path: Path
    mask_path: Path


def find_cases(dataset_dir: str | Path, split: str = "all") -> list[Case]:
    """Labelled cases of ``split`` in a dataset folder (split-file order; natural order for all).

    Raises:
        InputError: the folder has no known layout, the split is unknown (the message lists the
            available ones), or the selection is empty.
    """
    spec = open_dataset(dataset_dir)
    if not spec.has_split_file:
        split = "all"
    return [Case(s.stem, s.image_path, s.label_path) for s in spec.samples(split, labelled=True)]


def class_names(dataset_dir: str | Path) -> dict[int, str]:
    """Class id -> name from the folder's class file; {} when there is none (or no dataset)."""
    root = Path(dataset_dir)
    try:
        detect_layout(root)
    except InputError:
        return {}
    found = read_classes(root)
    return found[0] if found else {}
