"""``check_dataset``: find what would break training or evaluation on a dataset, before it does.

Checked, per dataset: images without labels and labels without images, stems with several files,
nnU-Net channel files missing, split-file stems without files, stems in two splits. Per sample
(reading every file through :mod:`medseg.io`): unreadable files, NaN/Inf in images, channel files
of different shapes, image/label shape (and 3D world geometry) disagreement, label values that are
not classes of the spec (binary 0/255 masks count as class 1), and empty masks (a warning).
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from medseg.data.cases import Case
from medseg.data.layouts import open_dataset
from medseg.data.spec import DatasetSpec, listed
from medseg.errors import InputError
from medseg.io import check_pair, read_image, read_label

_MAX_PRINTED = 50


@dataclass
class CheckReport:
    """The result of :func:`check_dataset`: ``errors`` and ``warnings`` as ``(stem, message)``.

    ``stem`` is the case's stem, or ``"*"`` for a problem of the whole folder. ``label_values``
    maps each label value seen to the number of checked samples holding it.
    """

    root: Path
    layout: str
    split: str
    n_samples: int = 0
    n_checked: int = 0
    classes: dict[int, str] = field(default_factory=dict)
    classes_source: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    empty_masks: list[str] = field(default_factory=list)
    label_values: dict[int, int] = field(default_factory=dict)
    _beyond_inferred: dict[int, list[str]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when no errors were found (warnings allowed)."""
        return not self.errors

    @property
    def counts(self) -> dict[str, int]:
        return {"samples": self.n_samples, "checked": self.n_checked, "errors": len(self.errors),
                "warnings": len(self.warnings), "empty_masks": len(self.empty_masks)}

    def to_dict(self) -> dict:
        return {"root": str(self.root), "layout": self.layout, "split": self.split, "ok": self.ok,
                "counts": self.counts, "classes": {str(k): v for k, v in self.classes.items()},
                "classes_source": self.classes_source,
                "errors": [list(e) for e in self.errors], "warnings": [list(w) for w in self.warnings],
                "empty_masks": self.empty_masks,
                "label_values": {str(k): v for k, v in sorted(self.label_values.items())}}

    def to_json(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the report as JSON, atomically, by the output policy (never over the dataset's own
        files; an existing file only with ``overwrite``); returns the path."""
        from medseg.data.datasets import dataset_files
        from medseg.io.outputs import plan_outputs, write_text

        target = plan_outputs({"--json": path}, protected=dataset_files(self.root), overwrite=overwrite)["--json"]
        return write_text(target, json.dumps(self.to_dict(), indent=1) + "\n")

    def format(self) -> str:
        """The human-readable report :meth:`print` prints."""
        lines = [f"dataset {self.root} ({self.layout} layout), split {self.split!r}: "
                 f"{self.n_checked} of {self.n_samples} samples checked"]
        names = ", ".join(f"{k} {v}" for k, v in list(self.classes.items())[:12])
        more = f" ... ({len(self.classes)} in all)" if len(self.classes) > 12 else ""
        lines.append(f"  classes ({self.classes_source}): {names}{more}")
        if self.label_values:
            values = ", ".join(f"{v}: {n}" for v, n in sorted(self.label_values.items())[:20])
            lines.append(f"  label values (samples holding each): {values}")
        for title, items in (("ERRORS", self.errors), ("warnings", self.warnings)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += [f"    [{stem}] {message}" for stem, message in items[:_MAX_PRINTED]]
                if len(items) > _MAX_PRINTED:
                    lines.append(f"    ... and {len(items) - _MAX_PRINTED} more (write them all with --json)")
        if self.empty_masks:
            lines.append(f"  empty masks: {len(self.empty_masks)} ({listed(self.empty_masks)})")
        verdict = "OK" if self.ok else f"FAILED: {len(self.errors)} error(s)"
        lines.append(f"  {verdict}, {len(self.warnings)} warning(s)")
        return "\n".join(lines)

    def print(self, file: TextIO | None = None) -> None:
        """Print the report (to stdout unless ``file`` is given)."""
        print(self.format(), file=file or sys.stdout)


def _folder_problems(spec: DatasetSpec, split: str, report: CheckReport) -> None:
    """Problems visible from file names alone: pairing, duplicates, channels, split files."""
    scan, root = spec.scan(), spec.root
    label_dir = "masks/ or labelsTr/" if spec.layout == "paired" else "the label folder"
    for path in scan.unpaired_images:
        report.errors.append((path.name, f"image {path} has no label: add the label with the same "
                              f"stem to {label_dir}, or remove the image"))
    for path in scan.unpaired_labels:
        report.errors.append((path.name, f"label {path} has no image: add the image with the same "
                              f"stem, or remove the label"))
    for files in scan.duplicates:
        report.errors.append((files[0].name, f"several files for one stem: {', '.join(map(str, files))}; "
                              f"keep one of them (the case is skipped meanwhile)"))
    for stem, missing in scan.missing_channels.items():
        have = ", ".join(p.name for p in scan.samples[stem].image_paths)
        want = ", ".join(f"{stem}_{i:04d}" for i in missing)
        report.errors.append((stem, f"missing channel file(s) {want} (found {have}); every case "
                              f"needs one file per channel of dataset.json channel_names"))
    source = spec.sources.get("splits", "")
    for name, stems in spec.splits.items():
        if split not in ("all", name) or not spec.has_split_file:
            continue
        absent = [s for s in stems if s not in scan.samples]
        if absent:
            report.errors.append(("*", f"split {name!r} of {root / source} names {len(absent)} stems "
                                  f"without files: {listed(absent)}; fix the split file"))
    seen: dict[str, str] = {}
    for name, stems in spec.splits.items():
        for stem in dict.fromkeys(stems):
            if stem in seen:
                report.warnings.append((stem, f"in both split {seen[stem]!r} and {name!r} of {source}: "
                                        f"a case in two splits leaks between training and testing"))
            seen[stem] = name


def _read_images(sample: Case, report: CheckReport):
    """The channel images of a sample, or None after recording why they cannot be used."""
    images = []
    for path in sample.image_paths:
        try:
            images.append(read_image(path))
        except InputError as exc:
            report.errors.append((sample.stem, str(exc)))
    if len(images) != len(sample.image_paths):
        return None
    shapes = {img.spatial_shape for img in images}
    if len(shapes) > 1:
        detail = ", ".join(f"{p.name} {img.spatial_shape}" for p, img in zip(sample.image_paths, images))
        report.errors.append((sample.stem, f"channel files differ in shape (Z, Y, X): {detail}; "
                              f"resample every channel onto the grid of channel 0"))
        return None
    return images


def _check_values(sample: Case, label: np.ndarray, spec: DatasetSpec, report: CheckReport) -> None:
    values = [int(v) for v in np.unique(label)]
    for v in values:
        report.label_values[v] = report.label_values.get(v, 0) + 1
    if not any(values):
        report.empty_masks.append(sample.stem)
        report.warnings.append((sample.stem, f"empty mask {sample.mask_path} (background only); "
                                f"fine for negatives, but it gives no prompt and no foreground"))
    allowed = set(spec.classes)
    if 255 not in allowed and 1 in allowed and set(values) <= {0, 255}:
        allowed.add(255)  # a binary 0/255 picture mask: 255 is class 1
    unexpected = [v for v in values if v not in allowed]
    if not unexpected:
        return
    if spec.sources.get("classes") == "inferred":  # one warning for all, after the loop
        for v in unexpected:
            report._beyond_inferred.setdefault(v, []).append(sample.stem)
        return
    known = ", ".join(str(k) for k in sorted(spec.classes))
    report.errors.append((sample.stem, f"label {sample.mask_path} has values {listed(unexpected)} that "
                          f"are not classes of the dataset ({known}; from {spec.sources.get('classes')}); "
                          f"fix the label or add the class to the class file"))


def _check_sample(sample: Case, spec: DatasetSpec, report: CheckReport) -> None:
    images = _read_images(sample, report)
    if sample.mask_path is None:
        return
    try:
        label = read_label(sample.mask_path)
    except InputError as exc:
        report.errors.append((sample.stem, str(exc)))
        return
    if images is not None:
        try:
            check_pair(images[0], label)
        except InputError as exc:
            report.errors.append((sample.stem, str(exc)))
    _check_values(sample, label.array, spec, report)


def check_dataset(root: str | Path, split: str = "all", max_cases: int | None = None,
                  progress: bool = True, modality: str | None = None) -> CheckReport:
    """Check a dataset folder of any layout and return a :class:`CheckReport` (nothing raised for
    bad files: each becomes an error naming the file and the fix).

    Args:
        root: the dataset folder (paired, HER-Seg or nnU-Net raw).
        split: the split to check (its samples are read), or "all".
        max_cases: read only the first N samples of the split (folder-level checks still cover all).
        progress: show a tqdm progress bar on stderr.
        modality: passed to :func:`medseg.data.open_dataset`.

    Raises:
        InputError: the folder has no known layout, a JSON file is malformed, or the split is unknown.
    """
    spec = open_dataset(root, modality=modality, warn=False)
    report = CheckReport(root=Path(root), layout=spec.layout, split=split, classes=dict(spec.classes),
                         classes_source=spec.sources.get("classes", ""))
    _folder_problems(spec, split, report)
    try:
        with warnings.catch_warnings():  # stems of a split without files are reported above
            warnings.simplefilter("ignore")
            samples = spec.samples(split)
    except InputError as exc:
        if "unknown split" in str(exc):
            raise
        report.errors.append(("*", str(exc)))
        samples = []
    report.n_samples = len(samples)
    chosen = samples[:max_cases] if max_cases is not None else samples
    bar = tqdm(chosen, desc=f"checking {spec.name}", unit="case", disable=not progress,
               file=sys.stderr, leave=False)
    for sample in bar:
        _check_sample(sample, spec, report)
        report.n_checked += 1
    if report._beyond_inferred:
        stems = list(dict.fromkeys(s for v in report._beyond_inferred.values() for s in v))
        report.warnings.append(("*", f"{len(stems)} labels hold values {listed(sorted(report._beyond_inferred))} "
                                f"beyond the inferred classes (0 background, 1 foreground): {listed(stems)}; "
                                f"add a classes.json naming every class id"))
    return report
