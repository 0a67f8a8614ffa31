"""The one case type of medseg: an image (one file per channel), its mask, and optionally a patch.

A :class:`Case` names files; :func:`load_case` reads them (``medseg.io``), checks that image and
mask share one grid, and cuts the case's patch when it has one. Evaluation, training and the
embedding caches all take cases; datasets give them (:func:`medseg.data.datasets.dataset_cases`).

Arrays follow ``medseg.io``: an image is ``(C, Z, Y, X)``, a label ``(Z, Y, X)``; a 2D picture
has ``Z == 1``. A patch is ``(z0, z1, y0, y1, x0, x1)``, half-open voxel ranges of the case.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import InputError

if TYPE_CHECKING:  # medseg.io (nibabel, SimpleITK, pydicom) loads when a case is read, not on import
    from medseg.io import Image, Label

Patch = tuple[int, int, int, int, int, int]
"""(z0, z1, y0, y1, x0, x1): half-open voxel ranges, in array order."""


@dataclass(frozen=True)
class Case:
    """One case: image file(s) in channel order, its mask file (None when unlabelled), a patch.

    Attributes:
        stem: the case's name in its dataset (unique there).
        image_paths: one file per channel (most cases have one file holding every channel).
        mask_path: the label map, or None for an unlabelled image.
        patch: None for the whole case, else ``(z0, z1, y0, y1, x0, x1)`` (see :data:`Patch`).
    """

    stem: str
    image_paths: tuple[Path, ...]
    mask_path: Path | None = None
    patch: Patch | None = None

    def __post_init__(self) -> None:
        paths = (self.image_paths,) if isinstance(self.image_paths, (str, Path)) else self.image_paths
        object.__setattr__(self, "image_paths", tuple(Path(p) for p in paths))
        if self.mask_path is not None:
            object.__setattr__(self, "mask_path", Path(self.mask_path))
        if not self.image_paths:
            raise InputError(f"case {self.stem!r} has no image file")

    @property
    def image_path(self) -> Path:
        """The first (channel 0) image file."""
        return self.image_paths[0]

    def cut(self, patch: Patch) -> Case:
        """This case restricted to ``patch`` (voxel ranges of the whole case, half-open)."""
        z0, z1, y0, y1, x0, x1 = (int(v) for v in patch)
        if not (0 <= z0 < z1 and 0 <= y0 < y1 and 0 <= x0 < x1):
            raise InputError(f"case {self.stem!r}: patch {patch} is empty or negative; "
                             f"give (z0, z1, y0, y1, x0, x1) with each start below its end")
        return dataclasses.replace(self, patch=(z0, z1, y0, y1, x0, x1))


def plane(image: Image, z: int = 0, axis: int = 0) -> np.ndarray:
    """Cut ``z`` of an image's (C, Z, Y, X) array across spatial ``axis`` (0: a Z slice, (Y, X); 1: a Y
    row, (Z, X); 2: an X column, (Z, Y)) as (H, W) for one channel, else (H, W, C)."""
    array = np.take(image.array, z, axis=1 + axis)
    return array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)


def plane_2d(image: Image, what: str) -> np.ndarray:
    """:func:`plane` of a 2D image; InputError naming the file when it is a volume (``what`` says
    which stage takes 2D images only, e.g. "supervised training")."""
    if image.array.shape[1] != 1:
        raise InputError(f"{image.meta.source}: a volume of {image.array.shape[1]} slices; {what} takes 2D images")
    return plane(image)


def _read_channels(case: Case) -> Image:
    """The case's image; several channel files are stacked into one (C, Z, Y, X) image."""
    from medseg.io import read_image

    images = [read_image(p) for p in case.image_paths]
    if len(images) == 1:
        return images[0]
    shapes = {img.array.shape[1:] for img in images}
    if len(shapes) != 1:
        detail = ", ".join(f"{p.name} {img.array.shape[1:]}" for p, img in zip(case.image_paths, images))
        raise InputError(f"case {case.stem!r}: its channel files differ in size ({detail}); resample them "
                         f"onto one grid")
    return dataclasses.replace(images[0], array=np.concatenate([img.array for img in images]))


def _cut(array: np.ndarray, patch: Patch, case: Case, shape: tuple[int, ...]) -> np.ndarray:
    """The last three axes of ``array`` cut to ``patch``; InputError when it leaves the case."""
    z0, z1, y0, y1, x0, x1 = patch
    if z1 > shape[0] or y1 > shape[1] or x1 > shape[2]:
        raise InputError(f"case {case.stem!r}: patch {patch} reaches outside its {shape} (Z, Y, X) grid")
    return array[..., z0:z1, y0:y1, x0:x1]


def load_image(case: Case) -> Image:
    """The case's image alone, (C, Z, Y, X), cut to its patch: for code that reads the mask itself (an
    evaluation scores against the whole label file) and would otherwise read it twice."""
    image = _read_channels(case)
    if case.patch is not None:
        image = dataclasses.replace(image, array=_cut(image.array, case.patch, case, image.array.shape[1:]))
    return image


def load_case(case: Case) -> tuple[Image, Label | None]:
    """Read a case: ``(Image (C, Z, Y, X), Label (Z, Y, X) or None)``, checked to share one grid.

    With a patch, both arrays are cut to it (the geometry stays that of the whole case).

    Raises:
        InputError: an unreadable file, or image and mask that do not match (named in the message).
    """
    from medseg.io import check_pair, read_label

    image = _read_channels(case)
    label = read_label(case.mask_path) if case.mask_path is not None else None
    if label is not None:
        check_pair(image, label)
    if case.patch is not None:
        shape = image.array.shape[1:]
        image = dataclasses.replace(image, array=_cut(image.array, case.patch, case, shape))
        if label is not None:
            label = dataclasses.replace(label, array=_cut(label.array, case.patch, case, shape))
    return image, label


def modality_loader(modality: str | None, loader=load_case):
    """``loader`` (``case -> (Image, Label)``) whose images say ``modality`` ("CT", "MR", ...), for files
    that carry none (NIfTI, PNG) where it picks the intensity window (a CT volume needs its Hounsfield
    window); None: ``loader`` itself, the files' own modality."""
    if modality is None:
        return loader

    def load(case: Case):
        image, label = loader(case)
        image.meta.modality = str(modality)
        return image, label

    return load

