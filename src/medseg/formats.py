"""The file suffixes medseg knows, in one place (lower case; ``.nii.gz`` kept whole).

:mod:`medseg.io` reads and writes them, :mod:`medseg.data` pairs them into datasets, the command
line lists them. This module imports nothing, so a dataset folder can be scanned without loading
the image libraries.
"""

PICTURE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""2D picture files."""

VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
"""Volume files: NIfTI, MetaImage, NRRD."""

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
"""DICOM files (a suffix-less file with the 'DICM' marker, and a folder of a series, are read too)."""

READ_SUFFIXES: tuple[str, ...] = PICTURE_SUFFIXES + VOLUME_SUFFIXES + DICOM_SUFFIXES
"""Every suffix :func:`medseg.io.read_image` / :func:`medseg.io.read_label` accept."""

WRITE_SUFFIXES: tuple[str, ...] = (".png", ".nii", ".nii.gz", ".mha", ".nrrd")
"""Every suffix :func:`medseg.io.write_label` / :func:`medseg.io.write_image` write."""
