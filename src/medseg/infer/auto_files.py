"""``medseg predict INPUT --task NAME``: automatic segmentation of a file or a folder of 2D images.

A file gives one label map (``--out``, default ``./<stem>_<task>.png``); a folder gives one label map
per image, ``<out>/<stem>.png`` (``--out`` default ``./<folder>_<task>/``), and, with ``--overlay
DIR``, ``DIR/<stem>_overlay.png``. Label maps hold the task's class ids (0 background), at each
image's resolution. Every output path is checked before anything is written: an existing file is
never replaced without ``--overwrite``, an input never. Unreadable images are listed and skipped;
the exit status is 1 when any failed. The model is loaded once; the next image is read while the
current one is segmented.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from medseg.errors import InputError
from medseg.formats import READ_SUFFIXES



def _suffix_ok(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(READ_SUFFIXES)


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _read_ahead(paths: list[Path], read):
    """``read(path)`` of each path in order (an InputError is yielded, not raised); the next file is read
    in a thread while the caller segments the current one."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(path: Path):
        try:
            return read(path)
        except InputError as exc:
            return exc

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(attempt, paths[0]) if paths else None
        for i in range(len(paths)):
            done = pending.result()
            if i + 1 < len(paths):
                pending = pool.submit(attempt, paths[i + 1])
            yield done


def predict_auto(segmenter, source: str | Path, task: str, out: Path | None = None, overlay: Path | None = None,
                 overwrite: bool = False, progress: bool = True) -> int:
    """Segment ``source`` (file or folder) as ``task``; returns the exit status (0 ok, 1 some failed)."""
    from medseg.data.cases import plane_2d
    from medseg.io import read_image, write_label
    from medseg.io.outputs import plan_outputs
    from medseg.viz import overlay as draw, save_png

    source = Path(source)
    info = segmenter.universal.automatic.task(task)  # unknown task: fail before reading anything
    if source.is_dir():
        inputs = sorted(p for p in source.iterdir() if _suffix_ok(p))
        if not inputs:
            raise InputError(f"{source}: no image files ({', '.join(READ_SUFFIXES)})")
        out_dir = out or Path.cwd() / f"{source.name}_{task}"
        targets = [(p, out_dir / f"{_stem(p)}.png", overlay / f"{_stem(p)}_overlay.png" if overlay else None)
                   for p in inputs]
    elif source.is_file():
        targets = [(source, out or Path.cwd() / f"{_stem(source)}_{task}.png", overlay)]
    else:
        raise InputError(f"{source}: no such file or folder")
    outputs = {f"{kind} of {src.name}": path for src, mask, picture in targets
               for kind, path in (("label map", mask), ("overlay", picture))}
    plan_outputs(outputs, inputs=[t[0] for t in targets], overwrite=overwrite)  # all checks before the first write
    failed = []
    names = ", ".join(f"{k} {v}" for k, v in info.classes.items())
    print(f"automatic segmentation, task {task!r} ({info.modality}; classes {names}): {len(targets)} image(s)")
    images = _read_ahead([t[0] for t in targets], read_image)
    for src, mask_path, picture in tqdm(targets, desc=task, unit="image", disable=not progress or len(targets) < 2):
        try:
            image = next(images)
            if isinstance(image, InputError):
                raise image
            plane = plane_2d(image, "automatic mode")
            result = segmenter.segment(plane, task)
        except InputError as exc:
            failed.append(str(exc))
            continue
        write_label(result.labels, mask_path, overwrite=overwrite)
        found = ", ".join(f"{info.classes[c]} {int((result.labels == c).sum())} px" for c in info.classes)
        line = f"{src.name}: {found} -> {mask_path}"
        if picture is not None:
            save_png(draw(plane, result.labels), picture, overwrite=overwrite, source=src)
            line += f" (overlay {picture})"
        if len(targets) == 1:
            print(line)
    if len(targets) > 1:
        print(f"wrote {len(targets) - len(failed)} label map(s) to {targets[0][1].parent}")
    for message in failed:
        print(f"failed: {message}", file=sys.stderr)
    return 1 if failed else 0
