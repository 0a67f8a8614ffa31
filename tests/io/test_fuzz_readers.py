"""Mutation fuzzing of the readers: a corrupt file reads to a usable array or raises InputError.

A seeded loop flips, inserts and cuts bytes of tiny valid PNG, JPEG, NIfTI (.nii.gz, .nii), DICOM
and TIFF files. Each format gets an equal share of a time budget of about ``BUDGET_S`` seconds (a
budget, not an assertion: the loop just stops mutating when its share is used). Every mutated file
must either read to a plain numeric array of the documented shape ((C, Z, Y, X) for an image, with
finite values; integer (Z, Y, X) for a label), or raise :class:`InputError` naming the file. Any
other exception, or a reader still busy after ``CASE_LIMIT_S`` (a hang, e.g. a loop in a file's
structure), fails with the seed and the mutations, so the case can be replayed with
:func:`mutate`. Explicit regression cases for the findings of this loop come first.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import signal
import struct
import threading
import time
import traceback
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import tifffile

from medseg.errors import InputError
from medseg.io import read_image, read_label

pydicom = pytest.importorskip("pydicom")
from dicomkit import minimal_dicom, save_dicom  # noqa: E402

BUDGET_S = 10.0
"""Total fuzzing time of all formats together, in seconds."""
FORMATS = ("png", "jpg", "nii.gz", "nii", "dcm", "tif")
MIN_CASES, MAX_CASES = 10, 2000
"""Per format: at least MIN_CASES mutated files even on a slow machine, at most MAX_CASES."""
MAX_VOXELS = 1 << 20
"""Reader limit in the loop, so a mutated header cannot make a reader allocate much."""
HOT_BYTES = 400
"""Half the mutations hit the first bytes of the file, where the headers are."""
CASE_LIMIT_S = 20.0
"""A reader busy this long on a tiny file hangs (reading one takes milliseconds)."""


# ----------------------------------------------------------------------------- tiny valid files

def png_bytes() -> bytes:
    """A 16x16 grey uint8 PNG holding class ids 0..3."""
    arr = (np.arange(256, dtype=np.uint8).reshape(16, 16) // 64).astype(np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpg_bytes() -> bytes:
    """A 16x16 RGB JPEG."""
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[4:12, 2:14] = (200, 100, 50)
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def nifti_bytes(compressed: bool) -> bytes:
    """An 8x8x4 NIfTI-1 (nibabel order X, Y, Z): uint8 ids (.nii.gz) or integral float32 (.nii)."""
    ids = (np.arange(8 * 8 * 4).reshape(8, 8, 4) % 3)
    data = ids.astype(np.uint8 if compressed else np.float32)
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    aff[:3, 3] = (-3.0, 4.0, 5.0)
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=2)
    raw = img.to_bytes()
    return gzip.compress(raw, mtime=0) if compressed else raw


def dicom_bytes() -> bytes:
    """An 8x8 uncompressed MR DICOM with geometry and rescale tags."""
    pixels = (np.arange(64) % 4).reshape(8, 8)
    return save_dicom(minimal_dicom(pixels, orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), slope=1.0, intercept=0.0,
                                    signed=False, uid_seed="medseg fuzz"))


def tif_bytes() -> bytes:
    """A 16x16 grey uint8 TIFF holding class ids 0..3 (tifffile's 'shaped' description)."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, (np.arange(256, dtype=np.uint8).reshape(16, 16) // 64))
    return buf.getvalue()


def base_bytes(fmt: str) -> bytes:
    return {"png": png_bytes, "jpg": jpg_bytes, "dcm": dicom_bytes, "tif": tif_bytes,
            "nii.gz": lambda: nifti_bytes(True), "nii": lambda: nifti_bytes(False)}[fmt]()


# ----------------------------------------------------------------------------- mutations

def mutate(data: bytes, seed: int) -> tuple[bytes, list[str]]:
    """``data`` with 1 to 3 seeded byte mutations (flip / insert / cut), and their description."""
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    done = []
    for _ in range(int(rng.integers(1, 4))):
        hot = rng.random() < 0.5 and len(out) > 0
        pos = int(rng.integers(0, min(len(out), HOT_BYTES) if hot else max(len(out), 1)))
        kind = ("flip", "insert", "cut")[int(rng.integers(0, 3))]
        if kind == "flip" and out:
            bit = 1 << int(rng.integers(0, 8))
            out[pos] ^= bit
            done.append(f"flip byte {pos} ^ {bit:#04x}")
        elif kind == "insert":
            new = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
            out[pos:pos] = new
            done.append(f"insert {new.hex()} at {pos}")
        else:
            n = int(rng.integers(1, 17))
            del out[pos:pos + n]
            done.append(f"cut {n} bytes at {pos}")
    return bytes(out), done


def mutated_file(folder: Path, fmt: str, base: bytes, seed: int) -> tuple[Path, list[str]]:
    """Write a mutated copy of ``base``. For .nii.gz every second seed mutates the uncompressed
    stream and compresses it again (mutating the gzip stream alone mostly trips its checksum)."""
    if fmt == "nii.gz" and seed % 2:
        raw, done = mutate(gzip.decompress(base), seed)
        data, done = gzip.compress(raw, mtime=0), ["inside gzip: " + ", ".join(done)]
    else:
        data, done = mutate(base, seed)
    path = folder / f"fuzz_{seed}.{fmt}"
    path.write_bytes(data)
    return path, done


# ----------------------------------------------------------------------------- the contract

def check_result(path: Path, read) -> str:
    """'ok' or 'error' if ``read(path)`` keeps the contract; AssertionError (or the stray
    exception) otherwise."""
    try:
        out = read(path, max_voxels=MAX_VOXELS)
    except InputError as exc:
        assert path.name in str(exc), f"InputError does not name the file: {exc}"
        return "error"
    arr = out.array
    assert isinstance(arr, np.ndarray) and arr.dtype.names is None, f"structured {arr.dtype}"
    if read is read_label:
        assert arr.dtype.kind in "iu" and arr.ndim == 3, f"label {arr.dtype} {arr.shape}"
    else:
        assert arr.dtype.kind in "biuf" and arr.ndim == 4, f"image {arr.dtype} {arr.shape}"
        assert arr.dtype.kind != "f" or np.isfinite(arr).all(), "NaN/Inf in an image"
    assert min(arr.shape) >= 1, f"empty array {arr.shape}"
    return "ok"


class ReaderHang(BaseException):
    """Raised into a reader that is still busy after CASE_LIMIT_S (a BaseException, so that the
    readers' own wrapping of library errors into InputError cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`ReaderHang` inside the block after ``seconds`` (POSIX main thread only;
    elsewhere no limit). Pure-Python loops are interrupted; a hang in C code is not."""
    main = threading.current_thread() is threading.main_thread()
    if not hasattr(signal, "setitimer") or not main:
        yield
        return

    def on_alarm(signum, frame):
        raise ReaderHang(f"still reading after {seconds:g} s")

    before = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def check_or_fail(path: Path, read, context: str) -> str:
    try:
        with time_limit(CASE_LIMIT_S):
            return check_result(path, read)
    except (Exception, ReaderHang):  # noqa: BLE001 - any stray exception is the finding
        pytest.fail(f"{read.__name__}({path.name}) broke the reader contract; {context}\n"
                    f"{traceback.format_exc()}", pytrace=False)


# ----------------------------------------------------------------------------- regressions

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize("read", [read_image, read_label])
def test_png_truncated_ihdr_is_input_error(tmp_path, read):
    """Finding (a): an IHDR chunk shorter than 13 bytes made Pillow raise a bare ValueError."""
    good = png_bytes()
    ihdr_end = 8 + 8 + 13 + 4
    bad = good[:8] + png_chunk(b"IHDR", good[16:21]) + good[ihdr_end:]
    path = tmp_path / "short_ihdr.png"
    path.write_bytes(bad)
    with pytest.raises(InputError, match="short_ihdr.png"):
        read(path)


@pytest.mark.filterwarnings("ignore")
def test_tiff_page_chain_loop_is_input_error_not_a_hang(tmp_path):
    """Finding: a TIFF whose next-page offset points back at a page made tifffile's series
    detection loop forever; the readers now refuse it at once."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((4, 4), np.uint8), metadata=None)
    raw = bytearray(buf.getvalue())
    first = struct.unpack_from("<I", raw, 4)[0]
    next_pointer = first + 2 + 12 * struct.unpack_from("<H", raw, first)[0]
    looping = len(raw)  # an empty page (0 tags) whose next page is itself
    raw += struct.pack("<HI", 0, looping)
    struct.pack_into("<I", raw, next_pointer, looping)
    path = tmp_path / "loop.tif"
    path.write_bytes(bytes(raw))
    for read in (read_image, read_label):
        with time_limit(CASE_LIMIT_S), pytest.raises(InputError, match="loop.tif") as err:
            read(path)
        assert "points back to an earlier page" in str(err.value)


@pytest.mark.parametrize("dims", ["6 5 0", "6 0 4"])
def test_mha_declaring_a_zero_size_is_input_error(tmp_path, dims):
    """Finding: an MHA whose DimSize holds a 0 read as an empty array instead of an error."""
    import SimpleITK as sitk

    path = tmp_path / "empty.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), str(path), False)
    path.write_bytes(path.read_bytes().replace(b"DimSize = 6 5 4", f"DimSize = {dims}".encode()))
    for read in (read_image, read_label):
        with pytest.raises(InputError, match="empty.mha") as err:
            read(path)
        assert "no voxels" in str(err.value)


def rgb_nifti(path: Path, alpha: bool, equal: bool = False) -> np.ndarray:
    """Save an 8x6x4 (X, Y, Z) RGB24 / RGBA32 NIfTI; return its channels as (C, Z, Y, X)."""
    names = ("R", "G", "B", "A") if alpha else ("R", "G", "B")
    rec = np.zeros((8, 6, 4), dtype=[(n, "u1") for n in names])
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 3, (8, 6, 4), dtype=np.uint8)
    for i, n in enumerate(names):
        rec[n] = grey if equal else rng.integers(0, 256, (8, 6, 4), dtype=np.uint8)
        if n == "A":
            rec[n] = 255
    nib.save(nib.Nifti1Image(rec, np.diag([0.5, 0.5, 2.0, 1.0])), str(path))
    return np.stack([rec[n].transpose(2, 1, 0) for n in names[:3]])


@pytest.mark.parametrize("alpha,code", [(False, 128), (True, 2304)])
def test_rgb_nifti_reads_as_channels(tmp_path, alpha, code):
    """Finding (b): RGB24 / RGBA32 NIfTI came back as a structured array; now (3, Z, Y, X)."""
    path = tmp_path / "colour.nii.gz"
    expected = rgb_nifti(path, alpha)
    assert int(nib.load(str(path)).header["datatype"]) == code
    img = read_image(path)
    assert img.array.dtype == np.uint8 and img.array.dtype.names is None
    assert img.array.shape == (3, 4, 6, 8)  # alpha dropped, as for pictures
    np.testing.assert_array_equal(img.array, expected)
    assert img.meta.spacing == (2.0, 0.5, 0.5) and img.meta.dtype == "uint8"
    with pytest.raises(InputError, match="colour.nii.gz"):
        read_label(path)  # differing colour channels are no label


def test_rgb_nifti_label_with_equal_channels_is_one_channel(tmp_path):
    path = tmp_path / "grey_rgb.nii"
    expected = rgb_nifti(path, alpha=False, equal=True)
    lab = read_label(path)
    assert lab.array.dtype == np.uint8 and lab.array.shape == (4, 6, 8)
    np.testing.assert_array_equal(lab.array, expected[0])


@pytest.mark.parametrize("code", [128, 2304, 32, 1792])  # RGB24, RGBA32, complex64, complex128
def test_nifti_header_bent_to_a_record_or_complex_type(tmp_path, code):
    """A float32 file whose datatype field was bent: a plain array of channels, or InputError."""
    raw = bytearray(nifti_bytes(compressed=False))
    struct.pack_into("<hh", raw, 70, code, {128: 24, 2304: 32, 32: 64, 1792: 128}[code])
    path = tmp_path / f"bent_{code}.nii"
    path.write_bytes(bytes(raw) + bytes(len(raw)))  # enough voxel data for the wider types
    for read in (read_image, read_label):
        check_or_fail(path, read, f"datatype bent to {code}")


def test_complex_nifti_is_refused_with_advice(tmp_path):
    data = np.ones((4, 3, 2), np.complex64)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "phase.nii.gz"))
    for read in (read_image, read_label):
        with pytest.raises(InputError, match="phase.nii.gz") as err:
            read(tmp_path / "phase.nii.gz")
        assert "complex" in str(err.value) and "magnitude" in str(err.value)


def test_4d_rgb_nifti_is_refused_with_advice(tmp_path):
    rec = np.zeros((4, 4, 3, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rec, np.eye(4)), str(tmp_path / "rgb4d.nii.gz"))
    with pytest.raises(InputError, match="rgb4d.nii.gz") as err:
        read_image(tmp_path / "rgb4d.nii.gz")
    assert "RGB" in str(err.value)


# ----------------------------------------------------------------------------- the fuzz loop

@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_readers(tmp_path, fmt):
    base = base_bytes(fmt)
    path = tmp_path / f"base.{fmt}"
    path.write_bytes(base)
    assert check_or_fail(path, read_image, "unmutated base file") == "ok"
    check_or_fail(path, read_label, "unmutated base file")  # an RGB JPEG is rightly no label
    deadline = time.monotonic() + BUDGET_S / len(FORMATS)
    seed0 = 10_000 * FORMATS.index(fmt)
    outcomes = {"ok": 0, "error": 0}
    cases = 0
    while cases < MAX_CASES and (cases < MIN_CASES or time.monotonic() < deadline):
        seed = seed0 + cases
        cases += 1
        path, done = mutated_file(tmp_path, fmt, base, seed)
        for read in (read_image, read_label):
            context = f"format {fmt}, seed {seed}, mutations: {'; '.join(done)}"
            outcomes[check_or_fail(path, read, context)] += 1
        path.unlink()
    print(f"{fmt}: {cases} mutated files, outcomes of read_image + read_label {outcomes}")
