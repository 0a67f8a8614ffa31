"""medseg's I/O layer: read images and label maps of every common medical format, write labels.

Arrays are channel first: an :class:`Image` holds ``(C, Z, Y, X)``, a :class:`Label` holds
integer ``(Z, Y, X)``; a 2D picture has ``Z == 1``. World geometry is RAS+ mm (see
:mod:`medseg.io.meta` for the exact conventions). Every bad input raises
:class:`medseg.errors.InputError` naming the file and what to do.
"""

from medseg.io._util import DEFAULT_MAX_VOXELS
from medseg.io._util import output_path as check_output_path
from medseg.io.meta import Image, Label, Meta, check_pair, resize_label
from medseg.formats import PICTURE_SUFFIXES, VOLUME_SUFFIXES
from medseg.io.readers import SUPPORTED_SUFFIXES, read_image, read_label
from medseg.io.writers import WRITE_SUFFIXES, write_image, write_label

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "PICTURE_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "VOLUME_SUFFIXES",
    "WRITE_SUFFIXES",
    "Image",
    "Label",
    "Meta",
    "check_output_path",
    "check_pair",
    "read_image",
    "read_label",
    "resize_label",
    "write_image",
    "write_label",
]
