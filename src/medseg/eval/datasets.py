"""Find the (image, mask) cases of a dataset folder.

Two layouts are understood:

* ``images/`` + ``masks/``: an image ``<stem>.<png|jpg|jpeg|bmp|tif|tiff>`` pairs with the
  mask of the same stem (any of the same extensions).
* ``imagesTr/`` + ``labelsTr/`` (nnU-Net): image ``<case>_0000.<ext>`` (or ``<case>.<ext>``)
  pairs with label ``<case>.<ext>``; ``<ext>`` is ``nii.gz``, ``nii``, ``mha``, ``nrrd`` or one
  of the 2D extensions. Further channels (``_0001``...) are not cases.

Optional files next to them:

* ``splits.json``: ``{"train": [stems], "val": [stems], "test": [stems]}`` (any split names).
  Without it every split means all cases; ``split="all"`` always does.
* ``classes.json``: ``{"0": "background", "1": "tumour", ...}`` names class ids. In the nnU-Net
  layout the ``labels`` of ``dataset.json`` are used when there is no classes.json.

Files without a partner are skipped with one warning that lists them.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
LAYOUTS = (("images", "masks"), ("imagesTr", "labelsTr"))
EXPECTED = (
    "expected either images/ + masks/ (same stems; png, jpg, jpeg, bmp or tif) or "
    "nnU-Net imagesTr/ + labelsTr/ (<case>_0000.nii.gz + <case>.nii.gz)"
)
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_MAX_LISTED = 20


@dataclass(frozen=True)
class Case:
    """One evaluation case: an image file and its ground-truth mask file."""

    stem: str
    image_path: Path
    mask_path: Path


def _split_suffix(name: str, suffixes: tuple[str, ...]) -> tuple[str, str] | None:
    """(stem, suffix) when ``name`` ends with one of ``suffixes`` (case-insensitive), else None."""
    lower = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return None


def _natural_key(stem: str) -> list:
    """Sort key putting case2 before case10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", stem)]


def _scan(
    folder: Path, suffixes: tuple[str, ...], channels: bool
) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Map stem -> file in ``folder``; also map each duplicated stem to all its file names.

    With ``channels`` (nnU-Net images) ``<case>_0000`` maps to ``<case>`` and other channel
    files are ignored. Hidden files, folders and other extensions are ignored.
    """
    found: dict[str, Path] = {}
    duplicates: dict[str, list[str]] = {}
    for path in sorted(folder.iterdir()):
        parts = _split_suffix(path.name, suffixes)
        if path.name.startswith(".") or not path.is_file() or parts is None:
            continue
        stem = parts[0]
        match = _CHANNEL.match(stem) if channels else None
        if match:
            if match["channel"] != "0000":
                continue
            stem = match["case"]
        if stem in found:
            duplicates.setdefault(stem, [found[stem].name]).append(path.name)
        found[stem] = path
    return found, duplicates


def _layout(root: Path) -> tuple[Path, Path, bool]:
    """(image folder, mask folder, is_nnunet) of a dataset, or InputError naming the folder."""
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist or is not a folder; {EXPECTED}")
    for images, masks in LAYOUTS:
        if (root / images).is_dir() and (root / masks).is_dir():
            return root / images, root / masks, images == "imagesTr"
    raise InputError(f"{root} is not a dataset folder: {EXPECTED}")


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _pair(root: Path) -> dict[str, Case]:
    """All paired cases of a dataset folder by stem; warns about unpaired and duplicated files."""
    image_dir, mask_dir, nnunet = _layout(root)
    suffixes = IMAGE_SUFFIXES + (VOLUME_SUFFIXES if nnunet else ())
    images, dup_images = _scan(image_dir, suffixes, channels=nnunet)
    masks, dup_masks = _scan(mask_dir, suffixes, channels=False)
    duplicated = set(dup_images) | set(dup_masks)
    if duplicated:
        names = [" / ".join(v) for v in (*dup_images.values(), *dup_masks.values())]
        message = f"{root}: stems with more than one file are ambiguous and skipped: {_listed(names)}"
        warnings.warn(message, stacklevel=3)
    unpaired = [images[s].relative_to(root).as_posix() for s in images if s not in masks]
    unpaired += [masks[s].relative_to(root).as_posix() for s in masks if s not in images]
    if unpaired:
        warnings.warn(f"{root}: {len(unpaired)} unpaired files skipped: {_listed(unpaired)}", stacklevel=3)
    stems = (set(images) & set(masks)) - duplicated
    return {s: Case(s, images[s], masks[s]) for s in sorted(stems, key=_natural_key)}


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc})") from exc


def read_splits(dataset_dir: str | Path) -> dict[str, list[str]] | None:
    """The split lists of ``splits.json`` (stems, file extensions removed), or None without one."""
    path = Path(dataset_dir) / "splits.json"
    if not path.is_file():
        return None
    data = _read_json(path)
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()
    ):
        raise InputError(f'{path}: expected {{"train": [stems], "val": [stems], "test": [stems]}}')
    suffixes = IMAGE_SUFFIXES + VOLUME_SUFFIXES
    return {
        str(name): [(_split_suffix(s, suffixes) or (s, ""))[0] for s in stems] for name, stems in data.items()
    }


def find_cases(dataset_dir: str | Path, split: str = "all") -> list[Case]:
    """Cases of ``split`` in a dataset folder, in natural stem order.

    Args:
        dataset_dir: a folder in one of the layouts of the module docstring.
        split: a key of ``splits.json``, or ``"all"``. Without splits.json every split is all.

    Raises:
        InputError: the folder has neither layout, the split is unknown (the message lists the
            available ones), or the selection is empty.
    """
    root = Path(dataset_dir)
    cases = _pair(root)
    splits = read_splits(root)
    if splits is not None and split != "all":
        if split not in splits:
            available = ", ".join(sorted(splits) + ["all"])
            raise InputError(f"unknown split {split!r} for {root}; available: {available}")
        wanted = splits[split]
        missing = [s for s in wanted if s not in cases]
        if missing:
            warnings.warn(
                f"{root}: {len(missing)} stems of split {split!r} have no image+mask pair: "
                f"{_listed(missing)}",
                stacklevel=2,
            )
        cases = {s: cases[s] for s in dict.fromkeys(wanted) if s in cases}
    if not cases:
        which = "" if split == "all" or splits is None else f" in split {split!r}"
        raise InputError(f"{root} has no image+mask cases{which}; {EXPECTED}")
    return list(cases.values())


def class_names(dataset_dir: str | Path) -> dict[int, str]:
    """Class id -> name from ``classes.json`` (or an nnU-Net ``dataset.json``); {} when absent."""
    root = Path(dataset_dir)
    path = root / "classes.json"
    if path.is_file():
        data = _read_json(path)
        try:
            return {int(k): str(v) for k, v in dict(data).items()}
        except (TypeError, ValueError) as exc:
            raise InputError(f'{path}: expected {{"0": "background", "1": "<name>", ...}}') from exc
    path = root / "dataset.json"
    if path.is_file() and (root / "imagesTr").is_dir():
        labels = _read_json(path)
        labels = labels.get("labels", {}) if isinstance(labels, dict) else {}
        names: dict[int, str] = {}
        for key, value in labels.items():
            if isinstance(value, int):  # nnU-Net v2: {"background": 0, "liver": 1}
                names[value] = str(key)
            elif str(key).isdigit():  # nnU-Net v1: {"0": "background", "1": "liver"}
                names[int(key)] = str(value)
        return names
    return {}
