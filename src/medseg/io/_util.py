"""Shared checks of the I/O layer: paths, size limits, error wrapping, dtypes, safe writing."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

import numpy as np

from medseg.errors import InputError

DEFAULT_MAX_VOXELS = 2**28
"""Default limit on the elements (voxels x channels) of one file, checked on the header."""


def existing_path(path) -> Path:
    """``path`` as a Path; InputError if it does not exist or is an empty file."""
    p = Path(path).expanduser()
    if not p.exists():
        hint = f" (relative to the current folder {Path.cwd()})" if not p.is_absolute() else ""
        raise InputError(f"{p}: no such file or folder{hint}; check the path and its spelling.")
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"{p}: the file is empty (0 bytes); re-export or re-download it.")
    return p


def check_voxels(path: Path, shape, max_voxels: int | None, what: str = "image") -> None:
    """InputError if ``prod(shape)`` exceeds ``max_voxels`` (None disables the check)."""
    n = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if max_voxels is not None and n > max_voxels:
        raise InputError(
            f"{path}: the {what} header declares shape {tuple(int(s) for s in shape)} = {n} "
            f"elements (voxels x channels), above the limit of {max_voxels} (a guard against "
            f"decompression bombs and memory exhaustion); downsample or crop it first. A file "
            f"you trust can be read with a higher limit (in Python: the max_voxels argument)."
        )


@contextlib.contextmanager
def reading(path: Path, fmt: str):
    """Turn any library error raised inside the block into an InputError naming ``path``."""
    try:
        yield
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - every library has its own exceptions
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].startswith("Exception thrown in SimpleITK"):
            lines = lines[1:]  # the first line is only ITK's source location
        msg = " ".join(lines)[:300]
        raise InputError(
            f"{path}: cannot read it as {fmt} ({type(exc).__name__}: {msg}). The file is likely "
            f"truncated, corrupt, or not really a {fmt} file; re-export or re-download it, or "
            f"give it the suffix of its real format."
        ) from exc


def native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in native byte order (nibabel and tifffile may return big-endian arrays)."""
    arr = np.asarray(arr)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def dtype_name(dtype) -> str:
    """'uint16', 'float32', ... without the byte order."""
    return np.dtype(dtype).newbyteorder("=").name


def check_finite(path, arr: np.ndarray) -> None:
    """InputError naming ``path`` and the count if a float array holds NaN or Inf."""
    if arr.dtype.kind in "fc":
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(
                f"{path}: {bad} of {arr.size} voxels are NaN or Inf; clean the image first: "
                f"replace them with a finite value (e.g. the background intensity) and save it "
                f"again."
            )


def check_numeric(path, arr: np.ndarray) -> None:
    """InputError naming ``path`` unless ``arr`` (``(C, Z, Y, X)``) holds at least one voxel and
    is a plain bool/integer/float array (not complex, not a record array, not objects), the
    dtypes the rest of medseg can use."""
    if arr.size == 0:
        raise InputError(f"{path}: the file holds no voxels (C, Z, Y, X) {tuple(arr.shape)}: "
                         f"its header declares a size of 0; re-export or re-download it.")
    dtype = arr.dtype
    if dtype.kind == "c":
        raise InputError(
            f"{path}: the voxels are complex numbers ({dtype_name(dtype)}, e.g. MR phase or "
            f"k-space data); save a real-valued image first, e.g. its magnitude."
        )
    if dtype.names is not None or dtype.kind not in "biuf":
        raise InputError(f"{path}: voxels of type {dtype} are not plain numbers; convert the file "
                         f"to a grey or RGB image of integers or floats first.")


def smallest_int(arr: np.ndarray, what: str, path=None) -> np.ndarray:
    """``arr`` (integer, bool, or float with integral values) cast to the smallest dtype of
    uint8, uint16, int16, int32 that holds its values; InputError for non-integer values."""
    arr = np.asarray(arr)
    where = f"{path}: " if path is not None else ""
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        rounded = np.round(np.where(np.isfinite(arr), arr, 0))
        n = int(np.count_nonzero(arr != rounded))  # NaN and Inf count as non-integer
        if n:
            raise InputError(
                f"{where}{what} must hold integer class ids, but {n} voxels are non-integer "
                f"(or NaN/Inf), e.g. a soft/probability map or a resampled label; threshold or "
                f"round it into class ids first, and resample labels with nearest neighbour only."
            )
    elif arr.dtype.kind not in "iu":
        raise InputError(f"{where}{what} has dtype {arr.dtype}; it must be integer class ids.")
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = arr.min(), arr.max()
    for dt in (np.uint8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return arr.astype(dt)
    raise InputError(f"{where}{what} values span [{lo}, {hi}], beyond int32; "
                     f"relabel them with small class ids.")


def same_file(a: Path, b: Path) -> bool:
    """True if ``a`` and ``b`` name the same file (or ``a`` lies inside the folder ``b``)."""
    ra, rb = Path(os.path.abspath(a)).resolve(), Path(os.path.abspath(b)).resolve()
    if ra == rb or (rb.is_dir() and rb in ra.parents):
        return True
    with contextlib.suppress(OSError):
        return ra.exists() and rb.exists() and os.path.samefile(ra, rb)
    return False


def output_path(path, like_source, overwrite: bool) -> Path:
    """Check the output ``path``: never an input, never an existing file unless ``overwrite``."""
    p = Path(path).expanduser()
    if like_source is not None and same_file(p, Path(like_source)):
        raise InputError(
            f"{p}: refusing to write over the input {like_source} that the geometry comes from; "
            f"outputs are never written over inputs. Choose another output path."
        )
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give a file name with a suffix such as .nii.gz.")
    if p.exists() and not overwrite:
        raise InputError(f"{p}: already exists; choose another path, or replace it with "
                         f"--overwrite on the command line (overwrite=True in Python).")
    return p


def full_suffix(path: Path) -> str:
    """Lower-case suffix, with '.nii.gz' (and other '.gz' pairs) kept whole."""
    name = path.name.lower()
    if name.endswith(".gz") and len(path.suffixes) >= 2:
        return "".join(s.lower() for s in path.suffixes[-2:])
    return path.suffix.lower()


def atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place, so a
    failed (or interrupted) write never leaves a half-written output, nor a temporary file, and
    never touches an existing ``path``. Parent folders are created (with the umask's mode).

    The file gets the permissions a plain ``open(path, "w")`` would give it: those of the file
    it replaces, else ``0o666`` less the process umask (not the private 0o600 of ``mkstemp``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        mode = _mode_for(path, tmp)
        write(tmp)
        os.chmod(tmp, mode)  # in case ``write`` replaced the file rather than writing into it
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def _new_temp_file(path: Path) -> Path:
    """Create an empty, unique ``.<name>.<random>.tmp<suffix>`` beside ``path``, with mode
    ``0o666 & ~umask`` (the kernel applies the umask, as for any new file)."""
    suffix = full_suffix(path)  # kept last, so the writers pick the format (.nii.gz compressed)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise InputError(f"{path}: cannot create a temporary file beside it (100 names taken); "
                     f"remove the stale .{path.name}.*.tmp* files in {path.parent}.")


def _mode_for(path: Path, tmp: Path) -> int:
    """Permission bits ``open(path, "w")`` would leave: an existing file's, else the new
    ``tmp``'s (``0o666 & ~umask``)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except FileNotFoundError:
        return stat.S_IMODE(os.stat(tmp).st_mode)
