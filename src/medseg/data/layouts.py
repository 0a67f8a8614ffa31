"""Read the three dataset layouts medseg understands into one list of :class:`~medseg.data.cases.Case` per split.

* ``"paired"``: ``images/<stem>.<ext>`` + ``masks/<stem>.<ext>`` (stems matched; ``<ext>`` one of
  png, jpg, jpeg, bmp, tif, tiff, nii, nii.gz, mha, nrrd), or ``imagesTr/<case>.nii.gz`` +
  ``labelsTr/<case>.nii.gz`` (``imagesTr/<case>_0000.nii.gz``, ``_0001``... are channels of one
  case); optional ``splits.json`` ``{"train": [stems], "val": [...], "test": [...]}``.
* ``"herseg"`` (HER-Seg): ``image_1024/`` + ``mask_1024/`` and ``<name>_data_split.json`` with
  ``train`` / ``valid`` / ``test`` lists of file names or stems (``valid`` becomes ``val``).
* ``"nnunet"`` (nnU-Net raw, ``DatasetXXX_Name/``): ``dataset.json`` (``channel_names``,
  ``labels``, ``file_ending``, ``numTraining``), ``imagesTr/<case>_0000<ending>`` (+ ``_0001``...
  per further channel), ``labelsTr/<case><ending>``, optional ``imagesTs/`` (+ ``labelsTs/``).
  Splits: fold 0 of ``splits_final.json`` (``[{"train": [...], "val": [...]}, ...]``) or a
  ``splits.json``, else every training case is ``train``; ``imagesTs`` cases are ``test``.

Only names are read here, never pixels. A case of several channel files lists them in channel
order in ``Case.image_paths``; each file holds an image ``(C, Z, Y, X)`` as read by
:func:`medseg.io.read_image` (2D pictures have Z == 1).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from medseg.data.cases import Case
from medseg.formats import PICTURE_SUFFIXES, VOLUME_SUFFIXES
from medseg.data.spec import (INFERRED_CLASSES, DatasetSpec, Scan, listed, read_classes, read_json,
                               read_modality)
from medseg.errors import InputError

SUFFIXES = PICTURE_SUFFIXES + VOLUME_SUFFIXES  # the files a dataset layout pairs
LAYOUTS = ("paired", "herseg", "nnunet")
EXPECTED = (
    "expected images/ + masks/ (same stems; png, jpg, bmp, tif, nii.gz, mha or nrrd), "
    "imagesTr/ + labelsTr/ (<case>.nii.gz or nnU-Net <case>_0000.nii.gz + dataset.json), "
    "or HER-Seg image_1024/ + mask_1024/ + <name>_data_split.json"
)
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_HERSEG = re.compile(r"^image_(\d+)$")


def split_suffix(name: str, suffixes: tuple[str, ...] = SUFFIXES) -> tuple[str, str] | None:
    """``(stem, suffix)`` when ``name`` ends with one of ``suffixes`` (case-insensitive), else None."""
    lower = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return None


def stem_of(entry: str) -> str:
    """The stem of a split-file entry: folders and a known suffix removed (``a/b.png`` -> ``b``)."""
    name = Path(str(entry)).name
    return (split_suffix(name) or (name, ""))[0]


def natural_key(stem: str) -> list:
    """Sort key putting case2 before case10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", stem)]


def _files(folder: Path) -> dict[str, list[Path]]:
    """stem -> files of ``folder`` with a known suffix (hidden files and folders ignored)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        parts = split_suffix(path.name)
        if parts is not None and not path.name.startswith(".") and path.is_file():
            found.setdefault(parts[0], []).append(path)
    return found


def pair_folders(image_dir: Path, label_dir: Path | None, *, channels: bool, n_channels: int = 1,
                 labels_required: bool = True) -> Scan:
    """Pair the files of ``image_dir`` with those of ``label_dir`` by stem.

    With ``channels``, ``<case>_NNNN`` images are channel NNNN of ``<case>`` (unless a label named
    ``<case>_NNNN`` exists, then it is a case of its own); every case should have channels
    ``0 .. max(n_channels, most channels seen) - 1``. Without ``labels_required`` (nnU-Net
    ``imagesTs``) an image without label is a sample with ``mask_path=None``.
    """
    scan = Scan()
    labels = _files(label_dir) if label_dir is not None else {}
    cases: dict[str, dict[int, list[Path]]] = {}
    for stem, paths in _files(image_dir).items():
        match = _CHANNEL.match(stem) if channels and stem not in labels else None
        case, index = (match["case"], int(match["channel"])) if match else (stem, 0)
        cases.setdefault(case, {}).setdefault(index, []).extend(paths)
    dup_cases = {c for c, chans in cases.items() if any(len(p) > 1 for p in chans.values())}
    dup_cases |= {s for s, p in labels.items() if len(p) > 1}
    for stem in sorted(dup_cases, key=natural_key):
        files = [p for ps in cases.get(stem, {}).values() if len(ps) > 1 for p in ps]
        scan.duplicates += [tuple(files)] if files else []
        scan.duplicates += [tuple(labels[stem])] if len(labels.get(stem, [])) > 1 else []
    expected = max([n_channels] + [max(c) + 1 for c in cases.values()])
    for stem in sorted(set(cases) | set(labels), key=natural_key):
        if stem in dup_cases:
            continue
        chans = cases.get(stem)
        if chans is None:
            scan.unpaired_labels.append(labels[stem][0])
            continue
        image_paths = tuple(chans[i][0] for i in sorted(chans))
        if stem not in labels and labels_required:
            scan.unpaired_images.extend(image_paths)
            continue
        scan.samples[stem] = Case(stem, image_paths, labels[stem][0] if stem in labels else None)
        missing = [i for i in range(expected) if i not in chans] if channels else []
        if missing:
            scan.missing_channels[stem] = missing
    return scan


def _herseg_split_file(root: Path) -> Path | None:
    """The ``<name>_data_split.json`` of a HER-Seg folder (the one named after it if several)."""
    found = sorted(root.glob("*_data_split.json"))
    if len(found) > 1:
        named = [p for p in found if p.name == f"{root.name}_data_split.json"]
        if len(named) != 1:
            raise InputError(f"{root}: several split files {listed([p.name for p in found])}; "
                             f"keep one, or name it {root.name}_data_split.json")
        return named[0]
    return found[0] if found else None


def _herseg_dirs(root: Path) -> tuple[Path, Path] | None:
    """``(image_<N>/, mask_<N>/)`` of a HER-Seg folder, or None."""
    for folder in sorted(root.glob("image_*")):
        size = _HERSEG.match(folder.name)
        if size and folder.is_dir() and (root / f"mask_{size[1]}").is_dir():
            return folder, root / f"mask_{size[1]}"
    return None


def detect_layout(root: str | Path) -> str:
    """``"paired"``, ``"herseg"`` or ``"nnunet"`` for a dataset folder (from its folder names).

    nnU-Net needs ``imagesTr/`` and ``dataset.json``; ``imagesTr/`` + ``labelsTr/`` without
    ``dataset.json`` is "paired". Raises InputError naming the folder and the expected layouts.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist or is not a folder; {EXPECTED}")
    if (root / "imagesTr").is_dir() and (root / "dataset.json").is_file():
        return "nnunet"
    if _herseg_dirs(root) is not None:
        return "herseg"
    if any((root / i).is_dir() and (root / m).is_dir() for i, m in (("images", "masks"), ("imagesTr", "labelsTr"))):
        return "paired"
    inner = sorted(p.name for p in root.glob("Dataset[0-9][0-9][0-9]_*") if p.is_dir())
    hint = f" (an nnU-Net raw folder? open one of {listed(inner)})" if inner else ""
    raise InputError(f"{root} is not a dataset folder{hint}: {EXPECTED}")


def _nnunet_json(root: Path) -> dict:
    if not isinstance(data := read_json(root / "dataset.json"), dict):
        raise InputError(f'{root / "dataset.json"}: expected an object with "channel_names", "labels"')
    return data


def scan_layout(root: str | Path, layout: str, spec: DatasetSpec | None = None) -> Scan:
    """Scan the files of a dataset folder in ``layout`` (see the module docstring)."""
    root = Path(root)
    if layout == "herseg":
        dirs = _herseg_dirs(root)
        if dirs is None:
            raise InputError(f"{root}: no image_<N>/ + mask_<N>/ folders; {EXPECTED}")
        return pair_folders(*dirs, channels=False)
    if layout == "nnunet":
        if spec is None:
            info = _nnunet_json(root)
            n, ending = len(info.get("channel_names") or {}), str(info.get("file_ending") or ".nii.gz")
        else:
            n, ending = len(spec.channels), spec.file_ending or ".nii.gz"
        n = 1 if ending.lower() in PICTURE_SUFFIXES else max(n, 1)  # an RGB png: 1 file, 3 channels
        scan = pair_folders(root / "imagesTr", root / "labelsTr", channels=True, n_channels=n)
        test = pair_folders(root / "imagesTs", root / "labelsTs", channels=True, n_channels=n, labels_required=False)
        if overlap := sorted(set(scan.samples) & set(test.samples), key=natural_key):
            raise InputError(f"{root}: cases {listed(overlap)} are in both imagesTr/ and imagesTs/; "
                             f"keep each case in one of them")
        for name in ("unpaired_images", "unpaired_labels", "duplicates"):
            getattr(scan, name).extend(getattr(test, name))
        scan.missing_channels.update(test.missing_channels)
        scan.samples.update(test.samples)
        return scan
    if layout != "paired":
        raise InputError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return pair_folders(root / "images", root / "masks", channels=False)
    return pair_folders(root / "imagesTr", root / "labelsTr", channels=True)


def _read_splits(path: Path, rename: dict[str, str] | None = None) -> dict[str, list[str]]:
    """``{split: [stems]}`` of a splits.json-like file (``rename`` maps file keys to ours)."""
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                                             for v in data.values()):
        raise InputError(f'{path}: expected {{"train": [stems], "val": [stems], "test": [stems]}}')
    rename = rename or {}
    return {rename.get(str(k), str(k)): [stem_of(s) for s in v] for k, v in data.items()}


def _nnunet_splits(root: Path, scan: Scan) -> tuple[dict[str, list[str]], str]:
    """nnU-Net splits: fold 0 of splits_final.json or splits.json, else all training = train."""
    train = [s for s, x in scan.samples.items() if x.image_path.parent.name == "imagesTr"]
    test = [s for s, x in scan.samples.items() if x.image_path.parent.name == "imagesTs"]
    path = root / "splits_final.json"
    if path.is_file():
        folds = read_json(path)
        if not (isinstance(folds, list) and folds and isinstance(folds[0], dict)):
            raise InputError(f'{path}: expected a list of folds [{{"train": [...], "val": [...]}}, ...]')
        splits = {k: [stem_of(s) for s in folds[0].get(k, [])] for k in ("train", "val")}
        source = "splits_final.json"
    elif (root / "splits.json").is_file():
        splits, source = _read_splits(root / "splits.json"), "splits.json"
    else:
        splits, source = {"train": train}, ("imagesTs" if test else "default")
    if test and "test" not in splits:
        splits["test"] = test
    return splits, source


def open_dataset(root: str | Path, modality: str | None = None, warn: bool = True) -> DatasetSpec:
    """Open a dataset folder of any layout: its :class:`DatasetSpec`, scanned (no pixels read).

    Args:
        root: the dataset folder.
        modality: overrides what the folder's files say (e.g. "CT", "MR", "dermoscopy").
        warn: warn once about unpaired and ambiguous (duplicated) files, which are left out.

    Raises:
        InputError: the folder has no known layout, or a JSON file of it is malformed.
    """
    root = Path(root)
    layout = detect_layout(root)
    spec = DatasetSpec(name=root.resolve().name or str(root), root=root, layout=layout)
    if layout == "nnunet":
        info = _nnunet_json(root)
        try:
            spec.channels = {int(k): str(v) for k, v in dict(info.get("channel_names") or {}).items()}
        except (TypeError, ValueError) as exc:
            raise InputError(f'{root / "dataset.json"}: channel_names must be {{"0": "CT", ...}}') from exc
        spec.file_ending = str(info.get("file_ending") or ".nii.gz")
        spec.name = str(info.get("name") or re.sub(r"^Dataset\d{3}_", "", spec.name))
    spec._scan = scan = scan_layout(root, layout, spec)
    if layout == "nnunet":
        spec.splits, spec.sources["splits"] = _nnunet_splits(root, scan)
    else:
        path = _herseg_split_file(root) if layout == "herseg" else root / "splits.json"
        if path is not None and path.is_file():
            spec.splits = _read_splits(path, {"valid": "val"} if layout == "herseg" else None)
            spec.sources["splits"] = path.name
            spec.name = path.name[: -len("_data_split.json")] if layout == "herseg" else spec.name
        else:
            spec.splits, spec.sources["splits"] = {"train": list(scan.samples)}, "default"
    classes = read_classes(root)
    spec.classes, spec.sources["classes"] = classes or (dict(INFERRED_CLASSES), "inferred")
    found = (modality, "caller") if modality is not None else read_modality(root)
    if found is not None:
        spec.modality, spec.sources["modality"] = found
    if warn:
        _warn_scan(root, scan)
    return spec


def missing_cases(spec: DatasetSpec, split: str = "all") -> dict[str, str]:
    """Cases a split names (or, for "all", images found) that cannot be scored, stem -> what is missing:
    a stem of the split file with no image and/or no mask file, or an image without its mask."""
    scan, found = spec.scan(), spec.scan().samples
    channels = spec.layout == "nnunet" or (spec.root / "imagesTr").is_dir()
    images = {(_CHANNEL.sub(r"\g<case>", stem_of(p.name)) if channels else stem_of(p.name)): p
              for p in scan.unpaired_images}
    labels = {stem_of(p.name): p for p in scan.unpaired_labels}

    def what(stem: str) -> str:
        if stem in images:
            return f"no mask file for {images[stem].relative_to(spec.root)}"
        if stem in labels:
            return f"no image file for {labels[stem].relative_to(spec.root)}"
        return "neither image nor mask file found"

    if split == "all" or not spec.has_split_file:
        return {stem: what(stem) for stem in images}
    return {stem: what(stem) for stem in dict.fromkeys(spec.splits.get(split, [])) if stem not in found}


def spec_from_json(source: str | Path) -> DatasetSpec:
    """A spec from JSON text (a str starting with ``{``) or a file written by ``DatasetSpec.to_json``,
    its folder scanned again (file names only) so that its splits list cases."""
    text = str(source)
    if isinstance(source, Path) or not text.lstrip().startswith("{"):
        data = read_json(Path(source))
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not a dataset spec: invalid JSON ({exc})") from exc
    try:
        spec = DatasetSpec(
            name=str(data["name"]), root=Path(data["root"]), layout=str(data["layout"]),
            classes={int(k): str(v) for k, v in data.get("classes", {}).items()},
            splits={str(k): [str(s) for s in v] for k, v in data.get("splits", {}).items()},
            modality=data.get("modality"), sources=dict(data.get("sources", {})),
            channels={int(k): str(v) for k, v in data.get("channels", {}).items()},
            file_ending=data.get("file_ending"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{source if len(text) < 300 else 'JSON text'}: not a dataset spec "
                         f"({type(exc).__name__}: {exc}); write it with DatasetSpec.to_json") from exc
    spec._scan = scan_layout(spec.root, spec.layout, spec)
    return spec


def _warn_scan(root: Path, scan: Scan) -> None:
    if scan.duplicates:
        names = [" / ".join(p.name for p in files) for files in scan.duplicates]
        warnings.warn(f"{root}: stems with more than one file are ambiguous and skipped: {listed(names)}",
                      stacklevel=3)
    unpaired = [p.relative_to(root).as_posix() for p in scan.unpaired_images + scan.unpaired_labels]
    if unpaired:
        warnings.warn(f"{root}: {len(unpaired)} unpaired files skipped: {listed(unpaired)}", stacklevel=3)
