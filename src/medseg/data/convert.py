"""``convert_dataset``: rewrite a dataset of one layout (paired, HER-Seg, nnU-Net raw) in another.

Files are copied byte for byte where the target takes them as they are, else re-encoded through
:mod:`medseg.io`, so labels stay integer and 3D geometry (affine, spacing) is kept. Picture masks
holding only 0/255 are stored as class ids 0/1. Splits are written in the target's own form:
``splits.json`` (paired), ``<name>_data_split.json`` with ``train``/``valid``/``test`` (HER-Seg),
or ``imagesTs/`` + ``labelsTs/`` for ``test`` and fold 0 of ``splits_final.json`` for ``train``/``val``
plus ``dataset.json`` (nnU-Net). Split files are written only when the source has one.

Only paired samples are converted (unpaired files are left out with a warning, as when reading);
nnU-Net test images without labels go to ``imagesTs/`` only when the target is nnU-Net.

The output is built in a temporary folder beside ``dst`` and moved into place at the end, so a
failed conversion leaves nothing half-written; ``src`` is never written to.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medseg.data.cases import Case
from medseg.data.layouts import LAYOUTS, PICTURE_SUFFIXES, VOLUME_SUFFIXES, detect_layout
from medseg.data.layouts import open_dataset, split_suffix
from medseg.data.spec import DatasetSpec
from medseg.errors import InputError
from medseg.io import read_image, read_label, write_image, write_label

_DATASET = re.compile(r"^Dataset(\d{3})_.+")


def _suffix(path: Path) -> str:
    return (split_suffix(path.name) or ("", path.suffix.lower()))[1]


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "dataset"


def _target(spec: DatasetSpec, dst: Path, to: str, dataset_id: int | None) -> Path:
    """The folder to create: ``dst``, or for nnU-Net ``dst/DatasetXXX_<name>`` unless ``dst`` is
    already named so (an existing folder of the same name gives its id, else the next free one)."""
    if to != "nnunet":
        return dst
    named = _DATASET.match(dst.name)
    if named:
        if dataset_id is not None and int(named[1]) != dataset_id:
            raise InputError(f"{dst}: the folder name says dataset id {named[1]} but dataset_id="
                             f"{dataset_id}; give one of them")
        return dst
    name = _safe_name(spec.name)
    taken = {int(p.name[7:10]): p.name[11:] for p in dst.glob("Dataset[0-9][0-9][0-9]_*")}
    same = [i for i, n in taken.items() if n == name]
    if dataset_id is None:
        dataset_id = same[0] if same else next(i for i in range(1, 1000) if i not in taken)
    if not 0 < dataset_id < 1000:
        raise InputError(f"dataset_id must be within 1..999 (nnU-Net's DatasetXXX), got {dataset_id}")
    return dst / f"Dataset{dataset_id:03d}_{name}"


def _check_target(src: Path, final: Path, overwrite: bool) -> None:
    """Refuse a target overlapping ``src``, or existing (unless ``overwrite`` and a dataset)."""
    rs, rf = src.resolve(), final.resolve()
    if rs == rf or rs in rf.parents or rf in rs.parents:
        raise InputError(f"{final}: the output would overlap the source {src}; converting never "
                         f"writes into (or deletes) the source. Choose a folder outside it.")
    if not final.exists():
        return
    if not overwrite:
        raise InputError(f"{final} already exists; pass overwrite=True (--overwrite) to replace it, "
                         f"or choose another folder")
    if not final.is_dir():
        raise InputError(f"{final} exists and is not a folder; remove it or choose another folder")
    if any(final.iterdir()):
        try:
            detect_layout(final)
        except InputError as exc:
            raise InputError(f"{final} exists and is not a dataset folder, so overwrite will not "
                             f"delete it; empty it yourself or choose another folder") from exc


def _put(src: Path, out: Path) -> None:
    """Copy ``src`` to ``out`` when they share a suffix, else re-encode it through medseg.io."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if _suffix(src) == _suffix(out):
        shutil.copyfile(src, out)
    else:
        write_image(read_image(src), out)


def _put_image(sample: Case, folder: Path, *, per_channel: bool, ending: str | None,
               nnunet: bool) -> tuple[int, Path]:
    """Write a sample's image into ``folder``; returns (number of channels, first file written).

    ``per_channel``: one file per channel (``<stem>_0000`` ...; a single-channel case of a paired
    folder keeps ``<stem>``), except picture files, which keep RGB in one file as nnU-Net does.
    Otherwise one file holding every channel. ``ending``: the output suffix (None: the source's).
    """
    srcs, stem = sample.image_paths, sample.stem
    if len(srcs) > 1 and per_channel:
        outs = [folder / f"{stem}_{i:04d}{ending or _suffix(src)}" for i, src in enumerate(srcs)]
        for src, out in zip(srcs, outs):
            _put(src, out)
        return len(srcs), outs[0]
    if len(srcs) > 1:  # stack the channel files into one (C, Z, Y, X) file
        images = [read_image(p) for p in srcs]
        stack = np.concatenate([img.array for img in images], axis=0)
        out = folder / f"{stem}{ending or '.nii.gz'}"
        write_image(stack, out, like=images[0].meta)
        return stack.shape[0], out
    src = srcs[0]
    suffix = ending or _suffix(src)
    single = folder / f"{stem}{'_0000' if nnunet else ''}{suffix}"
    if not per_channel or suffix in PICTURE_SUFFIXES:
        _put(src, single)
        return (read_image(src).array.shape[0] if nnunet else 1), single
    image = read_image(src)
    c = image.array.shape[0]
    if c == 1:
        _put(src, single)
        return 1, single
    outs = [folder / f"{stem}_{i:04d}{suffix}" for i in range(c)]
    for i, out in enumerate(outs):
        write_image(image.array[i:i + 1], out, like=image.meta)
    return c, outs[0]


def _put_label(src: Path, out: Path, classes: dict[int, str]) -> None:
    """Copy or re-encode a label; a 0/255 picture mask becomes class ids 0/1."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if _suffix(src) == _suffix(out) and _suffix(src) in VOLUME_SUFFIXES:
        shutil.copyfile(src, out)
        return
    label = read_label(src)
    arr = label.array
    if 255 not in classes and _suffix(src) in PICTURE_SUFFIXES and set(np.unique(arr).tolist()) <= {0, 255}:
        arr = (arr == 255).astype(np.uint8)
    write_label(arr, out, like=label.meta)


def _nnunet_json(spec: DatasetSpec, n_channels: int, picture: bool, n_train: int, ending: str) -> dict:
    if spec.channels and len(spec.channels) == n_channels:
        channels = {str(k): v for k, v in spec.channels.items()}
    elif picture and n_channels == 3:
        channels = {"0": "R", "1": "G", "2": "B"}
    else:
        names = (spec.modality or "").split("+")
        names = names if len(names) == n_channels and all(names) else [spec.modality or "image"] * n_channels
        channels = {str(i): n for i, n in enumerate(names)}
    labels: dict[str, int] = {}
    for i, name in spec.classes.items():
        labels[name if name not in labels else f"{name}_{i}"] = i
    return {"name": spec.name, "description": f"converted by medseg from {spec.root}",
            "channel_names": channels, "labels": labels, "numTraining": n_train, "file_ending": ending}


def _write_all(spec: DatasetSpec, samples: list[Case], out: Path, to: str, progress: bool) -> None:
    volumetric = any(_suffix(s.image_path) in VOLUME_SUFFIXES for s in samples)
    test = set(spec.splits.get("test", [])) if to == "nnunet" else set()
    if to == "nnunet":
        ending = ".nii.gz" if volumetric else ".png"
        dirs = {False: ("imagesTr", "labelsTr"), True: ("imagesTs", "labelsTs")}
    else:
        ending = None
        pair = ("imagesTr", "labelsTr") if to == "paired" and volumetric else ("images", "masks")
        pair = ("image_1024", "mask_1024") if to == "herseg" else pair
        dirs = {False: pair, True: pair}
    per_channel = to == "nnunet" or (to == "paired" and volumetric)
    n_channels, names = 1, {}
    bar = tqdm(samples, desc=f"converting {spec.name} to {to}", unit="case", disable=not progress,
               file=sys.stderr, leave=False)
    for sample in bar:
        image_dir, label_dir = (out / d for d in dirs[sample.stem in test])
        n, first = _put_image(sample, image_dir, per_channel=per_channel, ending=ending, nnunet=to == "nnunet")
        n_channels, names[sample.stem] = max(n_channels, n), first.name
        if sample.mask_path is not None:
            lab_suffix = ending or (_suffix(sample.mask_path) if volumetric else ".png")
            _put_label(sample.mask_path, label_dir / f"{sample.stem}{lab_suffix}", spec.classes)
    if spec.sources.get("classes") != "inferred" and to != "nnunet":
        _write_json(out / "classes.json", {str(k): v for k, v in spec.classes.items()})
    if spec.modality is not None and to != "nnunet":
        _write_json(out / "spec.json", {"name": spec.name, "modality": spec.modality})
    splits = spec.splits if spec.has_split_file else {}
    if to == "paired" and splits:
        _write_json(out / "splits.json", splits)
    elif to == "herseg" and splits:
        entries = {("valid" if k == "val" else k): [names.get(s, s) for s in v] for k, v in splits.items()}
        _write_json(out / f"{_safe_name(spec.name)}_data_split.json", entries)
    elif to == "nnunet":
        dropped = sorted(set(splits) - {"train", "val", "test"})
        if dropped:
            warnings.warn(f"nnU-Net keeps only train/val/test; splits {dropped} are not written", stacklevel=3)
        if splits and spec.sources.get("splits") != "imagesTs":
            _write_json(out / "splits_final.json", [{k: list(splits.get(k, [])) for k in ("train", "val")}])
        n_train = sum(1 for s in samples if s.stem not in test)
        _write_json(out / "dataset.json", _nnunet_json(spec, n_channels, not volumetric, n_train, ending))


def convert_dataset(src: str | Path, dst: str | Path, to: str = "paired", overwrite: bool = False,
                    dataset_id: int | None = None, progress: bool = True) -> DatasetSpec:
    """Convert the dataset folder ``src`` (any layout) into a new folder of layout ``to``.

    Args:
        src: dataset folder; only read.
        dst: the new dataset folder. For ``to="nnunet"`` a folder not named ``DatasetXXX_Name`` is
            taken as an nnU-Net raw folder, and the dataset goes to ``dst/DatasetXXX_<name>``.
        to: ``"paired"`` (images/ + masks/, or imagesTr/ + labelsTr/ for volumes), ``"herseg"``
            or ``"nnunet"``.
        overwrite: replace an existing output dataset folder (never one overlapping ``src``).
        dataset_id: nnU-Net dataset id (default: that of a same-named folder, else the next free).
        progress: show a tqdm progress bar on stderr.

    Returns:
        the :class:`DatasetSpec` of the written folder.

    Raises:
        InputError: unknown ``to``, output exists / overlaps ``src``, or a file cannot be converted.
    """
    if to not in LAYOUTS:
        raise InputError(f"unknown target layout {to!r}; use one of {', '.join(LAYOUTS)}")
    spec = open_dataset(src)
    samples = spec.samples("all")
    unlabelled = [s.stem for s in samples if s.mask_path is None]
    if unlabelled and to != "nnunet":  # only nnU-Net's imagesTs holds images without labels
        warnings.warn(f"{src}: {len(unlabelled)} images without labels are not converted (a {to} "
                      f"dataset pairs every image with a mask): {', '.join(unlabelled[:20])}", stacklevel=2)
        samples = [s for s in samples if s.mask_path is not None]
        spec.splits = {k: [s for s in v if s not in set(unlabelled)] for k, v in spec.splits.items()}
    final = _target(spec, Path(dst), to, dataset_id)
    _check_target(Path(src), final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        _write_all(spec, samples, tmp, to, progress)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return open_dataset(final, warn=False)
