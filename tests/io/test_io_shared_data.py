"""Real files from the sibling ``shared/data`` folder (never committed); skipped where absent."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.io import check_pair, read_image, read_label, write_label

SETS_2D = ["busi", "ct_organ_slices_demo", "drishti_gs1_odoc", "dsb2018_nuclei", "ham10000_mini",
           "isbi2012_em", "kvasir_seg", "ph2_derm"]

pytestmark = pytest.mark.data


def first_pair(folder: Path):
    """(image, mask) of the first image with a mask in ``folder``; skips, saying why, when there is none."""
    if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
        pytest.skip(f"{folder} has no images/ + masks/ folders")
    masks = {p.stem: p for p in (folder / "masks").glob("*.png")}
    for image in sorted((folder / "images").iterdir()):
        if image.stem in masks:
            return image, masks[image.stem]
    pytest.skip(f"{folder} has no image with a mask")


@pytest.mark.parametrize("name", SETS_2D)
def test_2d_set_first_pair(name, shared_data):
    folder = shared_data / name
    image_path, mask_path = first_pair(folder)
    image = read_image(image_path)
    label = read_label(mask_path)
    check_pair(image, label)
    assert image.array.ndim == 4 and image.array.shape[0] in (1, 3) and image.array.shape[1] == 1
    assert label.array.dtype.kind in "iu" and label.array.shape[0] == 1
    values = set(np.unique(label.array).tolist())
    assert values <= set(range(256))
    if name not in ("drishti_gs1_odoc", "ct_organ_slices_demo"):
        assert values <= {0, 255}  # binary sets, per INDEX.md


def test_la_heart_mri_nifti_pair_and_geometry(tmp_path, shared_data):
    folder = shared_data / "la_heart_mri"
    splits = folder / "splits.json"
    stems = sorted(p.name for p in (folder / "imagesTr").glob("*.nii.gz"))
    if not stems:
        pytest.skip(f"{folder}/imagesTr holds no .nii.gz")
    if splits.exists():
        test = json.loads(splits.read_text()).get("test") or []
        stems = [f"{s}.nii.gz" for s in test if (folder / "imagesTr" / f"{s}.nii.gz").exists()] \
            or stems
    image = read_image(folder / "imagesTr" / stems[0])
    label = read_label(folder / "labelsTr" / stems[0])
    check_pair(image, label)
    assert image.array.shape[0] == 1 and image.meta.format == "nifti"
    np.testing.assert_allclose(image.meta.spacing, (0.625,) * 3, rtol=1e-5)
    assert set(np.unique(label.array).tolist()) <= {0, 1}

    out = write_label(label.array, tmp_path / "pred.nii.gz", like=image.meta)
    h_in = nib.load(str(folder / "imagesTr" / stems[0])).header
    h_out = nib.load(str(out)).header
    for key in ("qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "pixdim"):
        assert h_in[key].tobytes() == h_out[key].tobytes(), key
    np.testing.assert_array_equal(read_label(out).array, label.array)
