"""The one output policy of medseg, for every file it writes (masks, overlays, reports, figures).

* every output path of a command is checked before the first one is written (:func:`plan_outputs`);
* two outputs of one command are never the same file;
* an input is never written over, with or without ``overwrite``; nor is anything inside a
  protected folder (a dataset's image and mask folders, its split and class files);
* an existing file is replaced only with ``overwrite`` (``--overwrite``);
* the folder must be writable: checked by creating (and removing) a probe file in the nearest
  existing folder, so a read-only place fails before anything is written;
* files are written atomically (a temporary file beside the target, then a rename), with the
  permissions of a plain ``open(path, "w")`` (``0o666`` less the umask).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from medseg.errors import InputError
from medseg.io._util import atomic_write, output_path, same_file

__all__ = ["atomic_write", "check_writable", "plan_outputs", "write_bytes", "write_text"]


def _nearest_folder(path: Path) -> Path:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(path: Path, what: str = "output") -> None:
    """InputError unless a file can be created where ``path`` will be (its nearest existing folder)."""
    folder = _nearest_folder(path)
    if not folder.is_dir():
        raise InputError(f"{what} {path}: {folder} is a file, not a folder; choose another path")
    probe = folder / f".medseg-probe-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write in {folder} ({exc.strerror or exc}); choose a folder "
                         f"you can write to") from None
    probe.unlink()


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def plan_outputs(outputs: Mapping[str, str | Path | None], *, inputs: Iterable[str | Path] = (),
                 protected: Iterable[str | Path] = (), overwrite: bool = False) -> dict[str, Path | None]:
    """Check every output of one command before anything is written; returns them as Paths.

    Args:
        outputs: ``{name shown in messages (e.g. "--out"): path or None}``.
        inputs: files the command reads: never written over.
        protected: files and folders never written into (a dataset's images, masks, split files).
        overwrite: replace existing files (never an input or a protected one).

    Raises:
        InputError: two outputs are one file; an output is an input, lies in a protected place, is
            a folder, exists without ``overwrite`` (:func:`medseg.io._util.output_path`, the check
            every writer makes again), or cannot be written there (one probe per folder).
    """
    planned = {name: None if p is None else Path(p).expanduser() for name, p in outputs.items()}
    seen: dict[Path, str] = {}
    inputs, protected = [Path(p) for p in inputs], [Path(p) for p in protected]
    probed: set[Path] = set()
    for name, path in planned.items():
        if path is None:
            continue
        key = path.resolve()
        if key in seen:
            raise InputError(f"{seen[key]} and {name} are the same file {path}; give each its own path")
        seen[key] = name
        if any(same_file(path, p) for p in inputs if p.exists()):
            raise InputError(f"{name} {path} is an input of this command; outputs are never written over inputs")
        if any(_inside(path, p) for p in protected):
            raise InputError(f"{name} {path} lies in the dataset's own files ({', '.join(str(p) for p in protected)}); "
                             f"write outputs elsewhere")
        output_path(path, None, overwrite)
        if _nearest_folder(path) not in probed:
            check_writable(path, name)
            probed.add(_nearest_folder(path))
    return planned


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (flushed to disk before the rename, which is
    flushed too where the file system allows): readers see the old file or the new one, never a part.
    The path's policy (:func:`plan_outputs`) is the caller's."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write)
    try:  # make the rename itself durable; not possible on every OS / file system
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:
        pass
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` as :func:`write_bytes` does."""
    return write_bytes(path, text.encode("utf-8"))
