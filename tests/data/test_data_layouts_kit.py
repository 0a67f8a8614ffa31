"""Builders of tiny datasets in ``tmp_path`` for the medseg.data tests (imported by them; no tests).

2D pictures are PNG (grey or RGB, 24 x 32 so rows != columns); 3D volumes are NIfTI of shape
(Z, Y, X) = (5, 12, 16) with a non-trivial affine. Labels hold class ids (or 0/255 when asked).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

AFFINE = np.array([[-0.8, 0.0, 0.0, 20.5], [0.0, 0.9, 0.1, -13.0], [0.0, 0.0, 2.5, -7.0], [0, 0, 0, 1.0]])


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def picture(seed: int, rgb: bool = False, shape=(24, 32)) -> np.ndarray:
    """uint8 (Y, X) or (Y, X, 3) noise picture, different per seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=shape + ((3,) if rgb else ()), dtype=np.uint8)


def mask2d(value: int = 1, shape=(24, 32), second: int | None = None) -> np.ndarray:
    """uint8 (Y, X) label: a rectangle of ``value`` (and a smaller one of ``second``)."""
    m = np.zeros(shape, np.uint8)
    m[4:14, 6:20] = value
    if second is not None:
        m[6:9, 8:12] = second
    return m


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def volume(seed: int, shape=(5, 12, 16), dtype=np.int16) -> np.ndarray:
    """(Z, Y, X) intensity volume."""
    return np.random.default_rng(seed).integers(-100, 300, size=shape).astype(dtype)


def mask3d(shape=(5, 12, 16), value: int = 1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[1:4, 3:9, 4:12] = value
    return m


def save_nifti(path: Path, zyx: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Write a (Z, Y, X) or (C, Z, Y, X) array as NIfTI (stored x, y, z[, c])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = zyx.T if zyx.ndim == 3 else np.moveaxis(zyx, 0, -1).transpose(2, 1, 0, 3)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


SPLITS = {"train": ["c1", "c2", "c3"], "val": ["c4"], "test": ["c5", "c6"]}
STEMS = ["c1", "c2", "c3", "c4", "c5", "c6"]


def make_paired_2d(root: Path, stems=STEMS, splits=SPLITS, rgb_every: int = 2, value: int = 255,
                   classes: dict | None = None) -> Path:
    """images/<stem>.png (every ``rgb_every``-th RGB) + masks/<stem>.png (+ splits.json)."""
    for i, stem in enumerate(stems):
        save_png(root / "images" / f"{stem}.png", picture(i, rgb=bool(rgb_every) and i % rgb_every == 0))
        save_png(root / "masks" / f"{stem}.png", mask2d(1 if classes else value, second=2 if classes else None))
    if splits is not None:
        write_json(root / "splits.json", splits)
    if classes is not None:
        write_json(root / "classes.json", classes)
    return root


def make_paired_3d(root: Path, stems=STEMS, splits=SPLITS) -> Path:
    """imagesTr/<stem>.nii.gz + labelsTr/<stem>.nii.gz (+ splits.json)."""
    for i, stem in enumerate(stems):
        save_nifti(root / "imagesTr" / f"{stem}.nii.gz", volume(i))
        save_nifti(root / "labelsTr" / f"{stem}.nii.gz", mask3d(value=1 + i % 2))
    if splits is not None:
        write_json(root / "splits.json", splits)
    write_json(root / "classes.json", {"0": "background", "1": "atrium", "2": "scar"})
    return root


def make_nnunet(root: Path, train=("p1", "p2", "p3", "p4"), test=("p5",), channels=("T2", "ADC"),
                folds: list | None = None, test_labels: bool = False) -> Path:
    """nnU-Net raw: dataset.json, imagesTr/<case>_000i.nii.gz, labelsTr/, imagesTs/ (+ labelsTs/)."""
    for part, cases in (("Tr", train), ("Ts", test)):
        for n, case in enumerate(cases):
            for c in range(len(channels)):
                save_nifti(root / f"images{part}" / f"{case}_{c:04d}.nii.gz", volume(10 * n + c + len(part)))
            if part == "Tr" or test_labels:
                save_nifti(root / f"labels{part}" / f"{case}.nii.gz", mask3d(value=1 + n % 2))
    write_json(root / "dataset.json", {
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": {"background": 0, "zone": 1, "lesion": 2},
        "numTraining": len(train), "file_ending": ".nii.gz"})
    if folds is not None:
        write_json(root / "splits_final.json", folds)
    return root


def make_herseg(root: Path, name="her", entries=None) -> Path:
    """image_1024/<stem>.png + mask_1024/<stem>.png + <name>_data_split.json (train/valid/test)."""
    for i, stem in enumerate(STEMS):
        save_png(root / "image_1024" / f"{stem}.png", picture(i, rgb=True))
        save_png(root / "mask_1024" / f"{stem}.png", mask2d(1))
    entries = entries or {"train": ["c1.png", "c2", "c3.png"], "valid": ["c4"], "test": ["c5.png", "c6"]}
    write_json(root / f"{name}_data_split.json", entries)
    return root
