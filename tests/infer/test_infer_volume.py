"""segment_volume: slice-by-slice 3D segmentation from a 3D box, with and without propagation."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.infer import Prediction, Predictor, segment_volume
from medseg.infer.volume import check_box3d, window_volume

Z, Y, X = 6, 48, 48


class RecordingPredictor(Predictor):
    """The real Predictor, recording every slice it is given and every box it is asked about."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.images: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []

    def set_image(self, image, modality=None):
        self.images.append(np.array(image, copy=True))
        return super().set_image(image, modality)

    def predict(self, box=None, **kwargs):
        self.boxes.append(np.array(box, copy=True))
        return super().predict(box=box, **kwargs)


class ThresholdPredictor:
    """A stand-in predictor: the mask is the part of the box brighter than half the 0..255 range."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        self.image = None

    def set_image(self, image, modality=None):
        self.image = np.asarray(image)
        self.images.append(self.image.copy())

    def predict(self, box=None, **kwargs):
        box = np.asarray(box, dtype=float)
        self.boxes.append(box.copy())
        x0, y0, x1, y1 = np.round(box).astype(int)
        mask = np.zeros(self.image.shape, bool)
        mask[y0:y1 + 1, x0:x1 + 1] = self.image[y0:y1 + 1, x0:x1 + 1] > 127.5
        return Prediction(mask[None, None], np.ones((1, 1), np.float32), np.zeros((1, 1, 64, 64), np.float32))


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """(6, 48, 48) noise with a bright block in slices 1..4; every slice differs."""
    rng = np.random.default_rng(0)
    vol = rng.normal(100.0, 10.0, (Z, Y, X)).astype(np.float32)
    vol[1:5, 12:36, 10:30] += 300.0
    return vol


def _which_slices(images: list[np.ndarray], volume: np.ndarray, modality=None) -> list[int]:
    """Map each recorded slice back to its z index in the (windowed, rescaled) volume."""
    scaled = window_volume(volume, modality)
    found = []
    for img in images:
        matches = [z for z in range(len(scaled)) if np.array_equal(img, scaled[z])]
        assert len(matches) == 1
        found.append(matches[0])
    return found


# ---------------------------------------------------------------- with the tiny model


@pytest.mark.parametrize("propagate", [True, False])
def test_output_shape_dtype_and_z_range(tiny_model, volume, propagate):
    p = RecordingPredictor(tiny_model, device="cpu")
    box3d = (8, 10, 2, 32, 38, 4)
    out = segment_volume(p, volume, box3d, propagate=propagate, progress=False)
    assert out.shape == volume.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1}
    assert not out[:2].any() and not out[5:].any(), "slices outside z0..z1 must stay empty"
    slices = _which_slices(p.images, volume)
    assert slices[0] == 3, "the key slice (middle of the z range) comes first"
    assert set(slices) <= {2, 3, 4} and len(slices) == len(set(slices))
    assert out[3].any(), "the random tiny model gives a non-empty mask on the key slice here"
    np.testing.assert_array_equal(p.boxes[0], [8, 10, 32, 38])


def test_without_propagation_every_slice_in_range_is_processed_once(tiny_model, volume):
    p = RecordingPredictor(tiny_model, device="cpu")
    out = segment_volume(p, volume, (8, 10, 1, 32, 38, 4), propagate=False, progress=False)
    slices = _which_slices(p.images, volume)
    assert sorted(slices) == [1, 2, 3, 4]
    for box in p.boxes:
        np.testing.assert_array_equal(box, [8, 10, 32, 38])
    # each slice's mask equals a plain 2D prediction with the same box on the same (rescaled) slice
    single = Predictor(tiny_model, device="cpu")
    scaled = window_volume(volume, None)
    for z in (1, 4):
        single.set_image(scaled[z])
        np.testing.assert_array_equal(out[z], single.predict(box=[8, 10, 32, 38]).masks[0, 0])


def test_key_slice_is_used_first(tiny_model, volume):
    p = RecordingPredictor(tiny_model, device="cpu")
    segment_volume(p, volume, (8, 10, 0, 32, 38, 5), key_slice=1, propagate=False, progress=False)
    slices = _which_slices(p.images, volume)
    assert slices[0] == 1 and sorted(slices) == list(range(6))


def test_key_slice_outside_the_range(tiny_model, volume):
    with pytest.raises(InputError, match="key slice"):
        segment_volume(Predictor(tiny_model, device="cpu"), volume, (8, 10, 2, 32, 38, 4), key_slice=5,
                       progress=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_volume(tiny_model, volume, bad):
    vol = volume.copy()
    vol[2, 5, 5] = bad
    with pytest.raises(InputError, match="NaN"):
        segment_volume(Predictor(tiny_model, device="cpu"), vol, (8, 10, 2, 32, 38, 4), progress=False)


@pytest.mark.parametrize("shape", [(48, 48), (2, 6, 48, 48)])
def test_volume_must_be_3d(tiny_model, shape):
    with pytest.raises(InputError, match=r"\(Z, Y, X\)"):
        segment_volume(Predictor(tiny_model, device="cpu"), np.zeros(shape, np.float32), (0, 0, 0, 5, 5, 1),
                       progress=False)


# ---------------------------------------------------------------- propagation logic (stand-in predictor)


def test_propagation_follows_the_object_and_stops_where_it_ends(volume):
    """Object in slices 1..4; box over all 6 slices: the walk from the key slice (2) goes down to 0
    (empty, stop) and up to 5 (empty, stop), each step prompted with the previous mask's box."""
    p = ThresholdPredictor()
    out = segment_volume(p, volume, (0, 0, 0, X - 1, Y - 1, Z - 1), propagate=True, progress=False)
    slices = _which_slices(p.images, volume)
    assert slices == [2, 1, 0, 3, 4, 5]
    expected = np.zeros(volume.shape, np.uint8)
    expected[1:5, 12:36, 10:30] = 1
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(p.boxes[0], [0, 0, X - 1, Y - 1])
    for box in p.boxes[1:]:  # later slices: the bounding box of the block's mask (x0, y0, x1, y1)
        np.testing.assert_array_equal(box, [10, 12, 29, 35])


def test_propagation_stops_after_an_empty_slice(volume):
    vol = volume.copy()
    vol[3] = 100.0  # the object vanishes in slice 3 and comes back in slice 4
    p = ThresholdPredictor()
    out = segment_volume(p, vol, (0, 0, 0, X - 1, Y - 1, Z - 1), key_slice=2, propagate=True, progress=False)
    slices = _which_slices(p.images, vol)
    assert slices == [2, 1, 0, 3]
    assert out[2].any() and out[1].any() and not out[3].any() and not out[4].any()


def test_empty_key_slice_processes_nothing_else(volume):
    p = ThresholdPredictor()
    out = segment_volume(p, volume, (0, 0, 0, 5, 5, Z - 1), propagate=True, progress=False)  # box misses it
    assert len(p.images) == 1 and not out.any()


def test_ct_window_is_applied_to_the_whole_volume():
    vol = np.full((3, 16, 16), -1000.0, np.float32)  # air
    vol[:, 4:12, 4:12] = 40.0                         # soft tissue, the window's centre
    vol[1, 0, 0] = 3000.0                             # bone, clipped to 240
    p = ThresholdPredictor()
    segment_volume(p, vol, (0, 0, 0, 15, 15, 2), modality="CT", propagate=False, progress=False)
    for img in p.images:
        assert img.min() == pytest.approx(0.0)
        assert img[8, 8] == pytest.approx(127.5)
    assert p.images[0][0, 0] == pytest.approx(255.0)  # key slice 1 holds the clipped bone voxel


# ---------------------------------------------------------------- check_box3d


def test_check_box3d_returns_rounded_ints():
    assert check_box3d((1.2, 2.0, 0.6, 10.4, 20, 3), (6, 48, 48)) == (1, 2, 1, 10, 20, 3)
    assert check_box3d(np.array([0, 0, 0, 47, 47, 5]), (6, 48, 48)) == (0, 0, 0, 47, 47, 5)


@pytest.mark.parametrize("box", [(10, 0, 0, 5, 5, 5), (0, 10, 0, 5, 5, 5), (0, 0, 4, 5, 5, 2)],
                         ids=["x", "y", "z"])
def test_check_box3d_inverted(box):
    with pytest.raises(InputError, match="inverted"):
        check_box3d(box, (6, 48, 48))


@pytest.mark.parametrize("box", [(-1, 0, 0, 5, 5, 5), (0, 0, 0, 48, 5, 5), (0, 0, 0, 5, 48, 5),
                                 (0, 0, 0, 5, 5, 6), (0, 0, -2, 5, 5, 1)])
def test_check_box3d_outside(box):
    with pytest.raises(InputError, match="outside the volume of 48x48x6"):
        check_box3d(box, (6, 48, 48))


@pytest.mark.parametrize("box", [(0, 0, 5, 5), (0, 0, 0, 5, 5, 5, 5), ()])
def test_check_box3d_wrong_length(box):
    with pytest.raises(InputError, match="6 numbers"):
        check_box3d(box, (6, 48, 48))


def test_segment_volume_checks_the_box(tiny_model, volume):
    p = RecordingPredictor(tiny_model, device="cpu")
    with pytest.raises(InputError, match="outside"):
        segment_volume(p, volume, (0, 0, 0, 10, 10, Z), progress=False)
    assert not p.images, "nothing is encoded before the box is checked"


def test_slices_encoded_in_batches_give_the_masks_of_one_at_a_time(tiny_model, volume):
    calls = []

    class Counting(Predictor):
        def prefetch(self, images, modality=None):
            calls.append(len(images))
            return super().prefetch(images, modality)

    box3d = (8, 10, 0, 32, 38, 5)
    one = segment_volume(Counting(tiny_model, device="cpu"), volume, box3d, propagate=False, progress=False,
                         slice_batch=1)
    calls.clear()
    batched = segment_volume(Counting(tiny_model, device="cpu"), volume, box3d, propagate=False, progress=False,
                             slice_batch=4)
    assert max(calls) == 4 and sum(calls) < 2 * Z
    assert (one == batched).mean() > 0.999
    calls.clear()
    default = segment_volume(Counting(tiny_model, device="cpu"), volume, box3d, propagate=False, progress=False)
    assert calls == [] and (default == one).all()  # on the CPU one slice at a time: no batch is faster there
