"""Thin slices: the volume predictor encodes every other slice and interpolates the rest (the 3D decoder
averages pairs of them anyway); thick slices, and ``every_slice=True``, encode them all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.infer.volume_prompts import VolumePredictor, encoded_slices, interpolate_slices
from medseg.models import build_model


def test_encoded_slices_take_every_step_th_and_the_last():
    assert encoded_slices(7, 2) == [0, 2, 4, 6]
    assert encoded_slices(8, 2) == [0, 2, 4, 6, 7]
    assert encoded_slices(1, 2) == [0]
    assert encoded_slices(5, 1) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="step"):
        encoded_slices(5, 0)


def test_interpolation_keeps_encoded_slices_and_fills_the_others_linearly():
    full = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 2, 3, 3) ** 2  # not linear in z
    kept = encoded_slices(8, 2)
    out = interpolate_slices(full[kept], kept, 8)
    assert out.shape == full.shape
    assert torch.equal(out[kept], full[kept])
    assert torch.allclose(out[1], (full[0] + full[2]) / 2) and torch.allclose(out[5], (full[4] + full[6]) / 2)
    assert interpolate_slices(full, list(range(8)), 8) is full


class CountingEncoder:
    """Wraps a model's ``encode_features`` and counts the slices it is given."""

    def __init__(self, model) -> None:
        self.model, self.slices = model, 0

    def encode_features(self, images):
        self.slices += images.shape[0]
        return self.model.encode_features(images)


@pytest.mark.parametrize("spacing, every_slice, step, expected", [((0.5, 1.0, 1.0), False, 2, 5),  # 0, 2, 4, 6, 8
                                                                   ((0.5, 1.0, 1.0), True, 1, 9),
                                                                   ((5.0, 1.0, 1.0), False, 1, 9)])  # thick slices
def test_the_predictor_skips_every_other_thin_slice_unless_asked(spacing, every_slice, step, expected):
    torch.manual_seed(0)
    predictor = VolumePredictor(build_model("litemedsam-3d-tiny"), every_slice=every_slice)
    counter = predictor.slices.model = CountingEncoder(predictor.slices.model)
    volume = np.random.default_rng(0).random((9, 20, 24)).astype(np.float32)
    assert predictor.slice_step(volume.shape, spacing) == step
    predictor.set_volume(volume, spacing)
    assert counter.slices == expected
    out = predictor.predict(points=[[10, 8, 4]], point_labels=[1])
    assert out.mask.shape == volume.shape


@pytest.mark.parametrize("flag, step", [([], 2), (["--every-slice"], 1)])
def test_the_cli_encodes_every_slice_when_asked(tmp_path, monkeypatch, flag, step):
    import nibabel as nib

    import medseg.infer.volume_prompts as volume_prompts
    from medseg.cli import main

    steps = []
    encode = volume_prompts.encode_slices
    monkeypatch.setattr(volume_prompts, "encode_slices", lambda *a: steps.append(a[-1]) or encode(*a))
    source = tmp_path / "thin.nii.gz"
    volume = np.random.default_rng(0).random((24, 20, 9)).astype(np.float32)  # (X, Y, Z) on disk
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 0.5, 1.0])), source)
    code = main(["predict", str(source), "--model", "litemedsam-3d-tiny", "--point", "10", "8", "4",
                 "--out", str(tmp_path / "m.nii.gz"), *flag])
    assert code == 0 and steps == [step]
