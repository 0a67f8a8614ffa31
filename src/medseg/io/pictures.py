"""Plain pictures: PNG, JPEG, BMP (Pillow) and TIFF (tifffile). No world geometry: spacing 1.0.

Every reader returns ``(array, meta)`` with ``array`` of shape ``(C, Z, Y, X)``: Pillow pictures
have ``Z == 1``; TIFF pages (and any other non-channel TIFF axes) are stacked along ``Z``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import tifffile

from medseg.errors import InputError
from medseg.io._util import check_voxels, dtype_name, native, reading
from medseg.io.meta import Meta

_SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "DIB": "bmp"}
_MODE_DTYPE = {"1": "bool", "I": "int32", "F": "float32", "I;16": "uint16", "I;16B": "uint16",
               "I;16L": "uint16", "I;16N": "uint16"}


def read_pil(path: Path, max_voxels: int | None, as_label: bool) -> tuple[np.ndarray, Meta]:
    """Read a PNG/JPEG/BMP with Pillow into ``(C, 1, Y, X)``.

    Grey (L, I;16, I, F, 1) gives C=1; RGB, RGBA, CMYK, YCbCr give C=3 (alpha dropped). A palette
    (P) picture gives RGB for an image but its palette *indices* for a label (class ids). Pillow's
    ``PIL.Image.MAX_IMAGE_PIXELS`` bomb guard is turned into an error (its warning is made an
    error with ``warnings.catch_warnings`` around ``open``), and ``max_voxels`` is checked on the
    header before decoding. Any other failure to open or decode (truncated or corrupt file) is an
    InputError naming the file.
    Limitation: Pillow reduces 16-bit RGB PNGs to 8 bits per channel (16-bit grey is kept).
    """
    with reading(path, _SUFFIX_FORMATS.get(path.suffix.lower(), "picture")):
        im = _open_pil(path)
    with im, reading(path, im.format or "picture"):
        bands = len(im.getbands())
        check_voxels(path, (bands, im.size[1], im.size[0]), max_voxels, "picture")
        im.load()  # decodes now: truncated data raises here
        fmt = _PIL_FORMATS.get(im.format, (im.format or "picture").lower())
        stored = _MODE_DTYPE.get(im.mode, "uint8")
        arr = _pil_array(im, as_label)
    arr = native(arr)
    if arr.ndim == 2:
        arr = arr[None, None]
    else:  # (Y, X, C)
        arr = np.moveaxis(arr, -1, 0)[:, None]
    meta = Meta(source=path, format=fmt, dtype=stored, shape=tuple(arr.shape[1:]))
    return np.ascontiguousarray(arr), meta


def _open_pil(path: Path) -> PIL.Image.Image:
    """``PIL.Image.open(path)`` (header only), with Pillow's pixel limit
    ``PIL.Image.MAX_IMAGE_PIXELS`` as an error (its warning is made one) and a non-picture as an
    InputError; other failures (truncated or corrupt header) are left to :func:`reading`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
        try:
            return PIL.Image.open(path)
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"has {found.group(1)} pixels" if found else "is very large"
            raise InputError(
                f"{path}: the picture {size}, above the limit of {PIL.Image.MAX_IMAGE_PIXELS} "
                f"pixels (a guard against decompression bombs); downsample it first, and check "
                f"that the file is what you expect."
            ) from exc
        except PIL.UnidentifiedImageError as exc:
            raise InputError(
                f"{path}: not a picture Pillow can read (the content is not PNG/JPEG/BMP, e.g. a "
                f"text or HTML file saved under an image name); check what the file really is."
            ) from exc


def _pil_array(im: PIL.Image.Image, as_label: bool) -> np.ndarray:
    """``(Y, X)`` or ``(Y, X, 3)`` array of an opened, loaded Pillow picture."""
    mode = im.mode
    if mode == "1":
        arr = np.asarray(im, dtype=np.uint8)
        return arr if as_label else arr * np.uint8(255)
    if mode in ("P", "PA"):
        if as_label:
            return np.asarray(im.getchannel(0) if mode == "PA" else im)
        has_alpha = mode == "PA" or "transparency" in im.info
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))[..., :3]
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        arr = np.asarray(im)
        if mode == "I" and im.format == "PNG":  # older Pillow opens 16-bit PNG as int32
            arr = arr.astype(np.uint16)
        return arr
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel(0))
    if mode in ("RGB", "RGBA", "RGBa", "RGBX"):
        return np.asarray(im)[..., :3]
    return np.asarray(im.convert("RGB"))  # CMYK, YCbCr, LAB, HSV ...


def read_tiff(path: Path, max_voxels: int | None, as_label: bool) -> tuple[np.ndarray, Meta]:
    """Read the first series of a TIFF into ``(C, Z, Y, X)``.

    Axes: Y and X are the picture; samples (S, e.g. RGB) and channels (C) become C; every other
    axis (pages, Z, T, ...) is flattened into Z in file order. Alpha samples are dropped; a
    palette TIFF gives RGB for an image and its indices for a label. Spacing is 1.0 (TIFF
    resolution tags are not interpreted).
    """
    with reading(path, "TIFF"):
        with tifffile.TiffFile(path) as tif:
            _check_page_chain(path, tif)
            if not tif.series:
                raise InputError(f"{path}: the TIFF holds no image series; check the file.")
            series = tif.series[0]
            check_voxels(path, series.shape, max_voxels, "TIFF")
            page = series.keyframe
            axes = str(series.axes)
            data = native(series.asarray())
            photometric = int(page.photometric)
            extras = [int(e) for e in (getattr(page, "extrasamples", ()) or ())]
            colormap = getattr(page, "colormap", None)
        stored = dtype_name(data.dtype)
        if "Y" not in axes or "X" not in axes or data.ndim != len(axes):
            raise InputError(f"{path}: TIFF axes {axes!r} have no Y/X picture plane; "
                             f"re-save it as a plain 2D or multi-page TIFF.")
        if "S" in axes and any(e in (1, 2) for e in extras):  # associated/unassociated alpha
            s = axes.index("S")
            data = np.take(data, np.arange(data.shape[s] - len(extras)), axis=s)
        if photometric == 3 and colormap is not None and not as_label and "S" not in axes:
            cmap = np.asarray(colormap)  # (3, 2**bits), 16-bit values
            data = np.moveaxis(cmap[:, data], 0, -1)
            data = (data // 257).astype(np.uint8) if cmap.max() > 255 else data.astype(np.uint8)
            axes = axes + "S"
        arr = _tiff_czyx(data, axes)
    meta = Meta(source=path, format="tiff", dtype=stored, shape=tuple(arr.shape[1:]))
    return arr, meta


def _check_page_chain(path: Path, tif: tifffile.TiffFile) -> None:
    """InputError if the chain of pages (IFDs) of an open TIFF comes back to a page already
    seen: a corrupt file on which tifffile's series detection would loop forever."""
    seen = set()
    for index, page in enumerate(tif.pages):
        if page.offset in seen:
            raise InputError(
                f"{path}: the TIFF is corrupt: its page {index} points back to an earlier page "
                f"(at byte {page.offset}), so its list of pages never ends; re-export the file."
            )
        seen.add(page.offset)


def _tiff_czyx(data: np.ndarray, axes: str) -> np.ndarray:
    """Reorder a tifffile array with axes string ``axes`` to ``(C, Z, Y, X)``."""
    y, x = axes.index("Y"), axes.index("X")
    chans = [i for i, a in enumerate(axes) if a in "CS"]
    others = [i for i in range(len(axes)) if i not in chans and i not in (y, x)]
    data = data.transpose(others + chans + [y, x])
    n_z = int(np.prod([data.shape[i] for i in range(len(others))], dtype=np.int64))
    ys, xs = data.shape[-2:]
    data = data.reshape(n_z, -1, ys, xs)
    return np.ascontiguousarray(data.transpose(1, 0, 2, 3))


def write_png(path: Path, arr: np.ndarray) -> None:
    """Write ``(Y, X)`` uint8/uint16 or ``(Y, X, 3)`` uint8 to a PNG (16-bit when uint16)."""
    PIL.Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG")
