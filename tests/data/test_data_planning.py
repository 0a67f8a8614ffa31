"""3D planning (``medseg.data.planning``, ``medseg data plan``): fingerprint, plan, preprocess and back.
Tiny NIfTI volumes written here; the real 3D sets in the data-marked test at the end."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main
from medseg.data.cases import Case
from medseg.data.planning import (Fingerprint, Plan, fingerprint, make_plan, nonzero_box, preprocess,
                                  restore_label)
from medseg.errors import InputError
from medseg.io import read_image, read_label


def save(path, zyx: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0)) -> None:
    """Write a (Z, Y, X) array as NIfTI with voxel sizes ``spacing_zyx`` (mm)."""
    affine = np.diag([*spacing_zyx[::-1], 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(zyx.transpose(2, 1, 0)), affine), str(path))


def ball_case(root, stem, spacing=(1.0, 1.0, 1.0), shape=(12, 20, 18), border=2, value=300.0):
    """An image with a zero border of ``border`` voxels and a bright ball (label 1) inside."""
    zz, yy, xx = np.indices(shape)
    centre = np.array(shape) / 2
    ball = ((zz - centre[0]) / (shape[0] / 4)) ** 2 + ((yy - centre[1]) / (shape[1] / 4)) ** 2 \
        + ((xx - centre[2]) / (shape[2] / 4)) ** 2 < 1
    image = np.where(ball, value, 50.0).astype(np.float32)
    image[:border], image[-border:] = 0, 0
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    save(root / "imagesTr" / f"{stem}.nii.gz", image, spacing)
    save(root / "labelsTr" / f"{stem}.nii.gz", ball.astype(np.uint8), spacing)
    return Case(stem, (root / "imagesTr" / f"{stem}.nii.gz",), root / "labelsTr" / f"{stem}.nii.gz")


def test_fingerprint_reads_spacing_cropped_shape_and_foreground(tmp_path):
    cases = [ball_case(tmp_path, f"c{i}", spacing=(2.0, 1.0, 1.0)) for i in range(3)]
    fp = fingerprint(cases, progress=False)
    assert fp.spacings == [(2.0, 1.0, 1.0)] * 3
    assert fp.shapes == [(8, 20, 18)] * 3  # the 2-slice zero borders cropped away
    assert fp.classes == [1] and fp.foreground["mean"] == pytest.approx(300.0)


def test_nonzero_box_of_an_all_zero_volume_is_the_whole_volume():
    assert nonzero_box(np.zeros((1, 3, 4, 5))) == (slice(0, 3), slice(0, 4), slice(0, 5))


def fp_of(spacings, shapes, modality=None) -> Fingerprint:
    return Fingerprint([tuple(s) for s in spacings], [tuple(s) for s in shapes],
                       {"mean": 100.0, "std": 20.0, "p00_5": -50.0, "p99_5": 250.0, "count": 10}, [1, 2], modality)


def test_isotropic_plan_takes_the_median_spacing_and_fits_the_budget():
    plan = make_plan(fp_of([(1, 1, 1), (1.2, 1.2, 1.2), (0.8, 0.8, 0.8)], [(100, 200, 180)] * 3),
                     patch_voxels=64 ** 3)
    assert plan.target_spacing == (1.0, 1.0, 1.0) and plan.coarse_axes == []
    assert all(p % 16 == 0 for p in plan.patch_size) and np.prod(plan.patch_size) <= 64 ** 3
    assert plan.batch_size >= 1 and plan.normalization == "zscore" and plan.ct_clip is None


def test_thick_slices_stay_thick_and_take_their_10th_percentile():
    """ACDC-like: 5-10 mm slices, ~1.5 mm in plane. The slice axis is coarse; its spacing is the 10th
    percentile of the cases' (not resampled to the in-plane 1.5 mm); the in-plane axes keep theirs."""
    spacings = [(10.0, 1.5, 1.5)] * 8 + [(5.0, 1.5, 1.5)] * 2
    plan = make_plan(fp_of(spacings, [(10, 200, 200)] * 10))
    assert plan.coarse_axes == [0]
    assert plan.target_spacing[1:] == (1.5, 1.5) and 5.0 <= plan.target_spacing[0] < 10.0


def test_pooling_halves_an_axis_only_while_it_is_not_much_coarser_than_the_finest():
    """nnU-Net's rule: 10 mm slices of 1.45 mm pixels are pooled in-plane twice (to 5.8 mm pixels) before
    the slices are; an isotropic patch is halved on every axis at every level, as before pooling was planned
    (so the U-Nets trained then are the same networks); an odd side is never halved."""
    from medseg.data.planning import pool_strides

    assert pool_strides((10.0, 1.45, 1.45), (16, 240, 224), 4) == [(1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert pool_strides((1.0, 1.0, 1.0), (64, 64, 64), 4) == [(2, 2, 2)] * 4
    assert pool_strides((1.0, 1.0, 1.0), (48, 64, 48), 4) == [(2, 2, 2)] * 4
    assert pool_strides((1.0, 1.0, 1.0), (12, 64, 48), 3) == [(2, 2, 2), (2, 2, 2), (1, 2, 2)]
    thick = make_plan(fp_of([(10.0, 1.5, 1.5)] * 4, [(10, 200, 200)] * 4))
    assert thick.pool_strides[0] == (1, 2, 2) and "pooling per U-Net level (z, y, x): 1x2x2" in thick.describe()
    assert Plan.from_dict(thick.to_dict()) == thick and make_plan(fp_of([(1, 1, 1)], [(32, 32, 32)]),
                                                                  levels=None).pool_strides is None


def test_ct_plan_clips_and_normalises_with_the_foreground_statistics():
    plan = make_plan(fp_of([(1, 1, 1)], [(32, 32, 32)], modality="CT"))
    assert plan.normalization == "ct" and plan.ct_clip == (-50.0, 250.0)
    image = read_image_like(np.array([-1000.0, 100.0, 3000.0]))
    x, _, _ = preprocess(image, None, plan)
    np.testing.assert_allclose(x.ravel(), [(-50 - 100) / 20, 0.0, (250 - 100) / 20])


def read_image_like(values: np.ndarray):
    """An in-memory Image of one row of voxels (1 mm), non-zero so nothing is cropped."""
    from medseg.io.meta import Image, Meta

    return Image(values.reshape(1, 1, 1, -1).astype(np.float32), Meta(spacing=(1.0, 1.0, 1.0)))


def test_plan_round_trips_through_json_and_refuses_other_dicts():
    plan = make_plan(fp_of([(3, 1, 1)], [(20, 64, 64)], modality="CT"))
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    older = {k: v for k, v in plan.to_dict().items() if k != "keep_largest"}  # a plan from before the field
    assert Plan.from_dict(older).keep_largest == []
    with pytest.raises(InputError, match="not a medseg plan"):
        Plan.from_dict({"spacing": 1})


def test_preprocess_then_restore_puts_the_label_back_on_the_input_grid(tmp_path):
    case = ball_case(tmp_path, "c0", spacing=(2.0, 0.7, 0.7), shape=(14, 40, 36))
    image, label = read_image(case.image_path), read_label(case.mask_path)
    plan = make_plan(fp_of([(2.0, 1.0, 1.0)], [(10, 28, 25)]))
    x, y, record = preprocess(image, label, plan)
    assert x.dtype == np.float32 and x.shape[0] == 1 and x.shape[1:] == y.shape == record.resampled
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=1e-3)
    back = restore_label(y, record)
    assert back.shape == label.array.shape
    truth = label.array > 0
    dice = 2 * (back.astype(bool) & truth).sum() / (back.astype(bool).sum() + truth.sum())
    assert dice > 0.95
    assert not back[:2].any() and not back[-2:].any()  # outside the crop stays background
    same = make_plan(fp_of([(2.0, 0.7, 0.7)], [(10, 40, 36)]))  # no resampling: exactly the label
    _, y2, record2 = preprocess(image, label, same)
    np.testing.assert_array_equal(restore_label(y2, record2), label.array)
    with pytest.raises(InputError, match="not the preprocessed shape"):
        restore_label(y2[:-1], record2)


def test_nan_volume_and_2d_pictures_are_refused(tmp_path):
    case = ball_case(tmp_path, "c0")
    bad = read_image(case.image_path)
    bad.array[0, 5, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        preprocess(bad, None, make_plan(fp_of([(1, 1, 1)], [(8, 20, 18)])))
    with pytest.raises(InputError, match="no cases"):
        fingerprint([], progress=False)
    picture = tmp_path / "picture.png"
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(picture)
    PILImage.fromarray(np.ones((8, 8), np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(InputError, match="picture.png: a 2D picture"):
        fingerprint([Case("p", (picture,), tmp_path / "mask.png")], progress=False)


def test_cli_plan_prints_writes_json_and_never_overwrites(tmp_path, capsys):
    root = tmp_path / "ds"
    for i in range(4):
        ball_case(root, f"c{i}", spacing=(3.0, 1.0, 1.0))
    out = tmp_path / "plan.json"
    assert main(["data", "plan", str(root), "--split", "all", "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "target spacing (z, y, x): 3 x 1 x 1 mm" in printed and "patch (Z, Y, X)" in printed
    written = json.loads(out.read_text())
    assert Plan.from_dict(written["plan"]).target_spacing == (3.0, 1.0, 1.0)
    assert len(written["fingerprint"]["spacings"]) == 4
    before = out.read_bytes()
    assert main(["data", "plan", str(root), "--split", "all", "--json", str(out), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["data", "plan", str(root), "--split", "all", "--modality", "CT", "--no-progress"]) == 0
    assert "CT: clip to" in capsys.readouterr().out


def test_real_sets_plan_as_their_geometry_says(shared_data):
    """ACDC's thick slices (about 10 mm, in-plane about 1.5 mm: read from pixdim, as ITK reads these
    files) make z the coarse axis; msd_hippocampus is isotropic 1 mm."""
    from medseg.data.datasets import dataset_cases

    with pytest.warns(UserWarning, match="contradict pixdim"):
        acdc = make_plan(fingerprint(dataset_cases(shared_data / "acdc_cardiac_mri", "train", limit=6), progress=False))
    assert acdc.coarse_axes == [0] and acdc.target_spacing[0] >= 5.0 and 1.2 < acdc.target_spacing[1] < 2.0
    hippo = make_plan(fingerprint(dataset_cases(shared_data / "msd_hippocampus", "train", limit=6), progress=False))
    assert hippo.target_spacing == (1.0, 1.0, 1.0) and hippo.classes == [1, 2]


def test_keep_largest_reduces_only_the_named_classes_to_their_largest_component():
    from medseg.data.masks import keep_largest

    labels = np.zeros((1, 6, 9), np.uint8)
    labels[0, 1:4, 0:3] = 1   # 9 voxels
    labels[0, 0, 8] = 1       # an island
    labels[0, 5, 0:2] = 2
    labels[0, 5, 7:9] = 2     # two pieces of class 2
    out = keep_largest(labels, [1])
    assert out[0, 0, 8] == 0 and (out == 1).sum() == 9 and (out == 2).sum() == 4
    assert labels[0, 0, 8] == 1  # the input is left as it was
    assert np.array_equal(keep_largest(np.zeros((2, 3, 3), np.uint8), [1, 2]), np.zeros((2, 3, 3), np.uint8))
