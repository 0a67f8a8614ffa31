"""``medseg demo``: segment real medical images that ship inside installed dependencies.

Nothing is downloaded: pydicom ships a CT and an MR slice, scikit-image a fundus photograph and
microscopy images. Each comes with a box drawn by hand around a structure a reader can check, and one
click inside it: the demo segments each image twice, from the box and from the single click.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def _pydicom_file(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        from pydicom.data import get_testdata_file

        return Path(get_testdata_file(name))
    return locate


def _skimage_file(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        import skimage.data

        return Path(os.path.dirname(skimage.data.__file__)) / name
    return locate


@dataclass(frozen=True)
class DemoCase:
    name: str
    locate: Callable[[], Path]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the image's pixels
    click: tuple[float, float]  # x, y: one positive click inside the same structure
    what: str


DEMO_CASES = (
    DemoCase("ct_spinal_canal", _pydicom_file("CT_small.dcm"), (46, 36, 74, 60), (60, 48),
             "CT slice (pydicom CT_small.dcm): spinal canal"),
    DemoCase("mr_structure", _pydicom_file("MR_small.dcm"), (34, 28, 58, 52), (46, 40),
             "MR slice (pydicom MR_small.dcm): round structure at the lower right"),
    DemoCase("fundus_optic_disc", _skimage_file("retina.jpg"), (140, 520, 350, 800), (245, 660),
             "fundus photograph (scikit-image retina.jpg): optic disc"),
    DemoCase("microscopy_cell", _skimage_file("cell.png"), (345, 305, 490, 430), (418, 368),
             "microscopy (scikit-image cell.png): the cell"),
    DemoCase("ihc_gland", _skimage_file("ihc.png"), (265, 290, 390, 500), (328, 395),
             "immunohistochemistry (scikit-image ihc.png): a gland"),
)


def fresh_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... whichever does not exist yet: no earlier output is lost."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
