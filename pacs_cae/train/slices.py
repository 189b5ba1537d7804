"""Slices for training and evaluation, prepared the way the codec sees them.

The codec normalises each whole slice by its own min and max, so training does the same *before* cropping.
Slices are resampled so that their longer side fills ``target`` pixels (as clinical 512x512 matrices are),
optionally with a random zoom so the model sees both smooth up-sampled and sharp native content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pacs_cae.codec.normalize import unit_range
from pacs_cae.train.sources import Volume

#: A slice whose mean normalised intensity is below this is "empty" (air) and skipped.
EMPTY_FRACTION = 0.02


def is_empty(slice_: np.ndarray) -> bool:
    """True for slices with (almost) no signal: all background or constant."""
    lo, hi = float(slice_.min()), float(slice_.max())
    if hi <= lo:
        return True
    return float(((slice_ - lo) / (hi - lo)).mean()) < EMPTY_FRACTION


def non_empty_indices(data: np.ndarray, axis: int) -> list[int]:
    """Indices along ``axis`` of the slices :func:`is_empty` would keep (vectorised over the volume)."""
    others = tuple(a for a in range(data.ndim) if a != axis)
    lo, hi, mean = data.min(axis=others), data.max(axis=others), data.mean(axis=others)
    span = np.where(hi > lo, hi - lo, 1.0)
    keep = (hi > lo) & ((mean - lo) / span >= EMPTY_FRACTION)
    return [int(i) for i in np.flatnonzero(keep)]


def fit_to(slice_: np.ndarray, target: int, scale: float = 1.0, order: int = 1) -> np.ndarray:
    """Resample so the longer side is ``target * scale`` pixels (aspect kept), then pad/crop to target x target."""
    from scipy import ndimage

    factor = target * scale / max(slice_.shape)
    out = ndimage.zoom(slice_, factor, order=order, prefilter=False) if abs(factor - 1) > 1e-6 else slice_
    return center_to(out.astype(np.float32), target)


def center_to(img: np.ndarray, size: int) -> np.ndarray:
    """Centre ``img`` on a size x size canvas filled with its minimum (crop where larger)."""
    canvas = np.full((size, size), float(img.min()), dtype=np.float32)
    h, w = img.shape
    sy, sx = max(0, (h - size) // 2), max(0, (w - size) // 2)
    img = img[sy : sy + size, sx : sx + size]
    h, w = img.shape
    oy, ox = (size - h) // 2, (size - w) // 2
    canvas[oy : oy + h, ox : ox + w] = img
    return canvas


def axial_slices(volume: Volume, count: int | None = None) -> list[np.ndarray]:
    """Non-empty axial slices (axis 2), rotated to radiological display; ``count`` evenly spaced if given."""
    idx = non_empty_indices(volume.data, 2)
    if count is not None and len(idx) > count:
        idx = [idx[round(i)] for i in np.linspace(0, len(idx) - 1, count)]
    return [np.rot90(volume.data[:, :, z]).copy() for z in idx]


@dataclass
class CropSampler:
    """Random training crops from a set of volumes, with augmentation.

    Every sample: pick a volume and a plane (axial mostly), a non-empty slice, a small rotation, a flip, an
    intensity gamma; resample with a random zoom so the slice's longer side is ``target * zoom`` pixels;
    normalise the whole slice to [0, 1]; add a little Gaussian noise; take a ``crop`` x ``crop`` window that
    is not pure background.
    """

    volumes: list[Volume]
    crop: int = 128
    target: int = 512
    zoom_range: tuple[float, float] = (0.5, 1.1)
    max_rotation_deg: float = 10.0
    noise_max: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        # pre-compute non-empty indices per (volume, axis)
        self._index: list[tuple[int, int, list[int]]] = []
        for v, vol in enumerate(self.volumes):
            for axis in (2, 1, 0):
                keep = non_empty_indices(vol.data, axis)
                if keep:
                    self._index.append((v, axis, keep))
        if not self._index:
            raise ValueError("no non-empty slices in the training volumes")

    def _plane(self) -> tuple[int, int, list[int]]:
        # axial twice as likely as each of the other planes
        weights = np.array([2.0 if axis == 2 else 1.0 for _, axis, _ in self._index])
        return self._index[int(self.rng.choice(len(self._index), p=weights / weights.sum()))]

    def sample(self) -> np.ndarray:
        from scipy import ndimage

        rng = self.rng
        v, axis, keep = self._plane()
        vol = self.volumes[v]
        img = np.rot90(np.take(vol.data, int(rng.choice(keep)), axis=axis)).astype(np.float32)
        if self.max_rotation_deg > 0:
            angle = rng.uniform(-self.max_rotation_deg, self.max_rotation_deg)
            img = ndimage.rotate(img, angle, reshape=False, order=1, mode="nearest")
        if rng.random() < 0.5:
            img = img[:, ::-1]
        zoom = rng.uniform(*self.zoom_range)
        img = fit_to(img, self.target, scale=zoom)
        img = unit_range(img)
        img = img ** rng.uniform(0.7, 1.4)  # intensity (contrast) augmentation, stays in [0, 1]
        if self.noise_max > 0:
            img = np.clip(img + rng.normal(0, rng.uniform(0, self.noise_max), img.shape), 0, 1)
        # a crop with some signal in it (a few tries, then whatever came)
        for _ in range(8):
            y = int(rng.integers(0, self.target - self.crop + 1))
            x = int(rng.integers(0, self.target - self.crop + 1))
            crop = img[y : y + self.crop, x : x + self.crop]
            if crop.mean() > 0.05:
                break
        return np.ascontiguousarray(crop, dtype=np.float32)

    def batch(self, n: int) -> np.ndarray:
        """(n, 1, crop, crop) float32 in [0, 1]."""
        return np.stack([self.sample() for _ in range(n)])[:, None]
