"""``DatasetSpec``: what a dataset folder holds (name, modality, classes, splits), as JSON.

A spec is built by :func:`medseg.data.layouts.open_dataset` (or read back from its JSON with
:func:`medseg.data.layouts.spec_from_json`), which scans the folder's file names into a
:class:`Scan`; :meth:`DatasetSpec.samples` lists the cases of a split.

Where the fields come from (the first that exists wins):

* ``classes`` ``{id: name}``: ``classes.json`` (``{"0": "background", "1": "tumour"}``),
  ``labels.json`` (the same, or ``{case: {"labels": {...}}}`` merged over cases), the ``labels`` of
  ``dataset.json`` (nnU-Net v2 ``{"background": 0, "liver": 1}`` or v1 ``{"0": "background"}``),
  the ``classes`` of ``spec.json``; else inferred as ``{0: "background", 1: "foreground"}``.
* ``modality``: the caller; the ``channel_names`` (v2) or ``modality`` (v1) of ``dataset.json``;
  the ``modality`` of ``spec.json``; else None.

``sources`` records which file gave ``classes``, ``splits`` and ``modality`` (``"inferred"`` /
``"default"`` when none did), so checks can be lenient with guessed classes and every split means
all samples when no split file exists.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.data.cases import Case
from medseg.errors import InputError

INFERRED_CLASSES = {0: "background", 1: "foreground"}
CLASS_FILES = ("classes.json", "labels.json", "dataset.json", "spec.json")
_MAX_LISTED = 20


def listed(names: list[str]) -> str:
    """``a, b, c ... and N more``: at most 20 names of a long list."""
    names = [str(n) for n in names]
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def read_json(path: Path) -> Any:
    """The parsed JSON of ``path``; InputError naming the file when unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc}); fix or delete the file") from exc


def read_yaml(path: str | Path, kind: str = "file") -> Any:
    """The parsed YAML of ``path``; InputError naming the ``kind`` of file when missing or unreadable."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{kind} {path} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not readable YAML ({exc})") from None


def parse_classes(data: Any, path: Path) -> dict[int, str]:
    """``{id: name}`` of a classes/labels mapping in any of the forms of the module docstring.

    Region entries of nnU-Net (``"tumour": [1, 2]``) name no single id and are skipped.
    """
    if not isinstance(data, dict):
        raise InputError(f'{path}: expected {{"0": "background", "1": "<name>", ...}}, got '
                         f"{type(data).__name__}")
    names: dict[int, str] = {}
    for key, value in data.items():
        if isinstance(value, dict) and "labels" in value:  # labels.json per case: merge
            for i, name in parse_classes(value["labels"], path).items():
                old = names.get(i)
                names[i] = name if old in (None, name) else f"{old}/{name}"
        elif isinstance(value, int) and not isinstance(value, bool):  # v2: {"liver": 1}
            names[value] = str(key)
        elif isinstance(value, list):  # nnU-Net region: a union of ids, not a class of its own
            continue
        elif str(key).lstrip("-").isdigit() and isinstance(value, str):  # v1: {"1": "liver"}
            names[int(key)] = value
        else:
            raise InputError(f'{path}: cannot read class entry {key!r}: {value!r}; expected '
                             f'{{"0": "background", "1": "<name>"}} or {{"<name>": 1}}')
    return dict(sorted(names.items()))


def read_classes(root: Path) -> tuple[dict[int, str], str] | None:
    """``(classes, file name)`` from the first class file of ``root`` that names classes, else None."""
    for name in CLASS_FILES:
        path = Path(root) / name
        if not path.is_file():
            continue
        data = read_json(path)
        if name in ("dataset.json", "spec.json"):
            data = data.get("labels" if name == "dataset.json" else "classes") if isinstance(data, dict) else None
            if not data:
                continue
        classes = parse_classes(data, path)
        if classes:
            return classes, name
    return None


def read_modality(root: Path) -> tuple[str, str] | None:
    """``(modality, file name)`` from ``dataset.json`` or ``spec.json`` of ``root``, else None.

    Several nnU-Net channels give their distinct names joined by "+" (e.g. ``"T2+ADC"``).
    """
    for name in ("dataset.json", "spec.json"):
        path = Path(root) / name
        data = read_json(path) if path.is_file() else None
        if not isinstance(data, dict):
            continue
        value = data.get("channel_names") or data.get("modality")
        if isinstance(value, dict) and value:
            distinct = list(dict.fromkeys(str(v) for v in value.values()))
            if distinct != ["R", "G", "B"]:  # nnU-Net's names for an RGB picture, not a modality
                return "+".join(distinct), name
        if isinstance(value, str) and value:
            return value, name
    return None


@dataclass
class Scan:
    """What scanning a dataset's folders found, from file names alone.

    ``samples`` maps stem -> :class:`~medseg.data.cases.Case` in natural stem order (case2 before
    case10); ``unpaired_images`` / ``unpaired_labels`` are files without a partner; ``duplicates``
    are the files of a stem that has several (e.g. a.png and a.jpg), which are left out of
    ``samples``; ``missing_channels`` maps a stem to the channel indices its ``_NNNN`` files lack.
    """

    samples: dict[str, Case] = field(default_factory=dict)
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_labels: list[Path] = field(default_factory=list)
    duplicates: list[tuple[Path, ...]] = field(default_factory=list)
    missing_channels: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class DatasetSpec:
    """Everything known about a dataset folder (no pixels read).

    Attributes:
        name: dataset name (folder name, HER-Seg split-file prefix, or ``dataset.json`` name).
        root: the dataset folder.
        layout: ``"paired"``, ``"herseg"`` or ``"nnunet"`` (see :mod:`medseg.data.layouts`).
        classes: ``{label id: name}``, 0 = background.
        splits: ``{split name: [stems]}`` in file order (``"train"``, ``"val"``, ``"test"``...).
        modality: e.g. ``"CT"``, ``"MR"``, ``"T2+ADC"``, or None when unknown.
        sources: which file gave ``"classes"``, ``"splits"`` and ``"modality"``.
        channels: nnU-Net ``channel_names`` ``{index: name}`` ({} for other layouts).
        file_ending: nnU-Net ``file_ending`` (e.g. ``".nii.gz"``), else None.
    """

    name: str
    root: Path
    layout: str
    classes: dict[int, str] = field(default_factory=lambda: dict(INFERRED_CLASSES))
    splits: dict[str, list[str]] = field(default_factory=dict)
    modality: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    channels: dict[int, str] = field(default_factory=dict)
    file_ending: str | None = None
    _scan: Scan | None = field(default=None, repr=False, compare=False)

    @property
    def has_split_file(self) -> bool:
        """False when no split file exists and ``splits`` is the default (all samples = train)."""
        return self.sources.get("splits", "default") != "default"

    def scan(self) -> Scan:
        """The files of the folder (see :class:`Scan`), as found when the spec was opened."""
        if self._scan is None:
            raise InputError(f"{self.root}: this dataset spec was not scanned; open the folder with "
                             f"medseg.data.open_dataset")
        return self._scan

    def samples(self, split: str = "all", labelled: bool = False) -> list[Case]:
        """The samples of ``split`` (a key of ``splits``, or ``"all"``), in split-file order.

        ``"all"`` is every sample found, in natural stem order (with nnU-Net ``imagesTs`` images
        that have no label). ``labelled=True`` keeps only samples with a label file. Stems a split
        names without files are skipped with one warning.

        Raises:
            InputError: unknown split (the message lists the available ones), or no samples.
        """
        found = self.scan().samples
        if split == "all":
            chosen = list(found.values())
        elif split not in self.splits:
            available = ", ".join(sorted(self.splits) + ["all"])
            raise InputError(f"unknown split {split!r} for {self.root}; available: {available}")
        else:
            wanted = list(dict.fromkeys(self.splits[split]))
            missing = [s for s in wanted if s not in found]
            if missing:
                warnings.warn(f"{self.root}: {len(missing)} stems of split {split!r} have no "
                              f"image+mask pair: {listed(missing)}", stacklevel=2)
            chosen = [found[s] for s in wanted if s in found]
        if labelled:
            chosen = [s for s in chosen if s.mask_path is not None]
        if not chosen:
            which = "" if split == "all" else f" in split {split!r}"
            raise InputError(f"{self.root} ({self.layout} layout) has no image+mask cases{which}; "
                             f"add files or fix the split file ({self.sources.get('splits')})")
        return chosen

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (class and channel ids become strings, ``root`` an absolute path)."""
        return {
            "name": self.name,
            "root": str(Path(self.root).absolute()),
            "layout": self.layout,
            "modality": self.modality,
            "classes": {str(k): v for k, v in self.classes.items()},
            "splits": {k: list(v) for k, v in self.splits.items()},
            "sources": dict(self.sources),
            "channels": {str(k): v for k, v in self.channels.items()},
            "file_ending": self.file_ending,
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The spec as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text
