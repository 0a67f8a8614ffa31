"""Files reaching ``medseg serve``: uploads (a picture, a volume, a DICOM file or a zip of a DICOM
series) and paths under ``--root``, read with medseg's readers and their guards. Nothing is
unpickled; an upload is copied into a private temporary folder under a name the server chooses."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import InputError
from ..formats import DICOM_SUFFIXES, PICTURE_SUFFIXES, READ_SUFFIXES
from ..io import read_image
from ..io._util import full_suffix

# single-file formats an upload may be (.mhd/.nhdr keep their voxels in a second file)
UPLOAD_SUFFIXES = PICTURE_SUFFIXES + (".nii.gz", ".nii", ".mha", ".nrrd") + DICOM_SUFFIXES + (".zip",)
ZIP_RATIO = 50  # a zip whose members unpack to more than this many times its size is refused


def upload_suffix(filename: str) -> str:
    """The suffix an uploaded ``filename`` is stored under, or InputError naming the accepted ones."""
    suffix = full_suffix(Path(PurePosixPath(filename.replace("\\", "/")).name or "upload"))
    if suffix not in UPLOAD_SUFFIXES and suffix != "":
        raise InputError(f"{filename}: unsupported upload type {suffix!r}; send one of {', '.join(UPLOAD_SUFFIXES)} "
                         f"(a DICOM series as a .zip of its files).")
    return suffix


def read_upload(filename: str, data: bytes, max_bytes: int) -> tuple:
    """Store ``data`` (the file ``filename``) in a fresh private folder and read it ->
    ``(image, folder, dicom_source)``; the folder is removed again if reading fails."""
    suffix = upload_suffix(filename)
    folder = Path(tempfile.mkdtemp(prefix="medseg-serve-"))
    try:
        if suffix == ".zip":
            path = _unzip_series(filename, data, folder / "series", max_bytes)
        else:
            path = folder / f"upload{suffix}"
            path.write_bytes(data)
        image = read_image(path)
        image.meta.source = Path(filename)  # errors and exports name the user's file, not the copy
        dicom = path if image.meta.format in ("dicom", "dicom-series") else None
        return image, folder, dicom
    except BaseException as error:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(error, InputError):  # name the user's file, not the server's copy
            raise InputError(str(error).replace(str(folder / "series"), filename).replace(
                str(folder / f"upload{suffix}"), filename)) from None
        raise


def _unzip_series(filename: str, data: bytes, folder: Path, max_bytes: int) -> Path:
    """Unpack the files of a zip (names discarded: members become 00000.dcm, ...; folders and links
    skipped) into ``folder``, refusing a zip bomb (unpacked size past ``ZIP_RATIO`` x the upload limit)."""
    import io

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir() and not PurePosixPath(m.filename).name.startswith(".")]
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{filename}: not a readable zip ({error}); zip the files of one DICOM series.") from None
    total = sum(m.file_size for m in members)
    if total > ZIP_RATIO * max_bytes:
        raise InputError(f"{filename}: the zip unpacks to {total / 1e6:.0f} MB, more than {ZIP_RATIO}x the upload "
                         f"limit; send a smaller series or raise --max-upload-mb.")
    if not members:
        raise InputError(f"{filename}: the zip holds no files; zip the files of one DICOM series.")
    folder.mkdir()
    with archive:
        for i, member in enumerate(members):
            try:
                (folder / f"{i:05d}.dcm").write_bytes(archive.read(member))
            except (zipfile.BadZipFile, OSError, RuntimeError) as error:
                raise InputError(f"{filename}: member {member.filename!r} cannot be unpacked ({error}).") from None
    return folder


def resolve_under(root: Path, relative: str) -> Path:
    """``root / relative`` if it stays inside ``root``: no absolute path, no ``..``, no symlink on the
    way, and it exists; else InputError."""
    rel = PurePosixPath(relative.replace("\\", "/"))
    if rel.is_absolute() or relative.startswith(("/", "\\")) or ".." in rel.parts or ":" in relative:
        raise InputError(f"{relative!r}: give a path relative to the served folder, without '..'")
    path = root
    for part in rel.parts:
        path = path / part
        if path.is_symlink():
            raise InputError(f"{relative!r}: symbolic links are not followed out of the served folder")
    if not path.exists():
        raise InputError(f"{relative!r}: no such file under the served folder")
    if not path.resolve().is_relative_to(root.resolve()):
        raise InputError(f"{relative!r}: the path leaves the served folder")
    return path


def list_root(root: Path, limit: int = 2000) -> list[dict]:
    """The readable files under ``root`` (relative POSIX paths, sizes), links skipped, at most ``limit``."""
    found, inside = [], root.resolve()
    for path in sorted(root.rglob("*")):
        if len(found) >= limit:
            break
        if path.is_symlink() or not path.is_file() or any(p.startswith(".") for p in path.relative_to(root).parts):
            continue
        if full_suffix(path) in READ_SUFFIXES and path.resolve().is_relative_to(inside):
            found.append({"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size})
    return found


def read_under_root(root: Path, relative: str) -> tuple:
    """Read ``relative`` under ``root`` -> ``(image, None, dicom_source)``."""
    path = resolve_under(root, relative)
    image = read_image(path)
    dicom = path if image.meta.format in ("dicom", "dicom-series") else None
    return image, None, dicom
