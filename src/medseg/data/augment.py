"""Random augmentation: draw parameters, then apply a fixed transform of :mod:`medseg.data.transforms`.

``RandomX().draw(rng) -> params`` (a small dict), then ``RandomX().fixed(params)`` is the fixed
transform; ``RandomX()(sample, rng)`` does both (TorchIO's pattern). ``Compose`` chains fixed and
random transforms and owns a seeded ``np.random.Generator``, so a run is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np

from medseg.data.transforms import Affine, Flip, Intensity, Rot90, SampleDict, Transform


class RandomTransform:
    """``draw(rng) -> params`` then ``fixed(params)``; with probability 1 - ``p`` params are the identity."""

    fixed_class: type = Transform

    def __init__(self, p: float = 1.0) -> None:
        self.p = float(p)

    def fixed(self, params: dict) -> Transform:
        return self.fixed_class(**params)

    def __call__(self, sample: SampleDict, rng: np.random.Generator | int | None) -> SampleDict:
        return self.fixed(self.draw(np.random.default_rng(rng)))(sample)


class RandomFlip(RandomTransform):
    """Flip left-right with probability ``p_horizontal``, top-bottom with ``p_vertical``."""

    fixed_class = Flip

    def __init__(self, p_horizontal: float = 0.5, p_vertical: float = 0.5) -> None:
        self.ph, self.pv = float(p_horizontal), float(p_vertical)

    def draw(self, rng):
        return {"horizontal": bool(rng.random() < self.ph), "vertical": bool(rng.random() < self.pv)}


class RandomRot90(RandomTransform):
    """With probability ``p`` rotate by 1, 2 or 3 quarter turns (equally likely)."""

    fixed_class = Rot90

    def draw(self, rng):
        apply, k = rng.random() < self.p, int(rng.integers(1, 4))
        return {"k": k if apply else 0}


class RandomAffine(RandomTransform):
    """With probability ``p`` rotate by an angle uniform in ``degrees`` and zoom by a factor
    log-uniform in ``scales`` (each (low, high)); ``(0, 0)`` / ``(1, 1)`` switch one off."""

    fixed_class = Affine

    def __init__(self, degrees=(-15.0, 15.0), scales=(0.85, 1.15), p: float = 0.5) -> None:
        super().__init__(p)
        self.degrees, self.scales = tuple(map(float, degrees)), tuple(map(float, scales))

    def draw(self, rng):
        apply = rng.random() < self.p
        angle, scale = rng.uniform(*self.degrees), np.exp(rng.uniform(*np.log(self.scales)))
        return {"angle": float(angle), "scale": float(scale)} if apply else {"angle": 0.0, "scale": 1.0}


class RandomIntensity(RandomTransform):
    """``Intensity`` whose brightness ``shift``, contrast ``factor``, ``gamma`` and noise ``std``
    (each a (low, high) range, uniform) are each switched on with probability ``p``."""

    fixed_class = Intensity

    def __init__(self, brightness=(-0.1, 0.1), contrast=(0.75, 1.25), gamma=(0.7, 1.5), noise=(0.0, 0.03),
                 p: float = 0.5, clip: tuple[float, float] | None = (0.0, 1.0)) -> None:
        super().__init__(p)
        self.ranges = {"shift": brightness, "factor": contrast, "gamma": gamma, "std": noise}
        self.clip = clip

    def draw(self, rng):
        identity = {"shift": 0.0, "factor": 1.0, "gamma": 1.0, "std": 0.0}
        params = {k: float(rng.uniform(*r)) if rng.random() < self.p else identity[k] for k, r in self.ranges.items()}
        return {**params, "seed": int(rng.integers(2**31)), "clip": self.clip}


class Compose:
    """Apply transforms in order; random ones draw from ``rng`` (default: own Generator from ``seed``).

    ``draw(rng)`` returns the list of params (None for fixed transforms) and ``fixed(params)`` the
    equivalent deterministic Compose, so one draw can be logged and replayed.
    """

    def __init__(self, transforms: list, seed: int | None = None) -> None:
        self.transforms, self.rng = list(transforms), np.random.default_rng(seed)

    def draw(self, rng: np.random.Generator) -> list[dict | None]:
        return [t.draw(rng) if isinstance(t, RandomTransform) else None for t in self.transforms]

    def fixed(self, params: list[dict | None]) -> Compose:
        return Compose([t.fixed(p) if isinstance(t, RandomTransform) else t for t, p in zip(self.transforms, params)])

    def __call__(self, sample: SampleDict, rng: np.random.Generator | int | None = None) -> SampleDict:
        rng = self.rng if rng is None else np.random.default_rng(rng)
        for t, p in zip(self.transforms, self.draw(rng)):
            sample = t(sample) if p is None else t.fixed(p)(sample)
        return sample


def train_augmentation() -> Compose:
    """The augmentation of training (``data.augment: true``), for images already prepared in [0, 1]
    (``medseg.data.preprocess.prepare_image``) and their masks: flips, quarter turns, rotation and
    zoom, brightness / contrast / gamma / noise, clipped to [0, 1]. Call it with a generator seeded
    per item (seed, epoch, index), so a resumed run sees the same items."""
    return Compose([RandomFlip(), RandomRot90(0.5), RandomAffine(p=0.5), RandomIntensity(p=0.5, clip=(0.0, 1.0))])
