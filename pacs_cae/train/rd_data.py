"""Training and validation data for the rate-distortion codec: realistic MR crops from package volumes.

Volumes: the mricron-data intensity templates (Colin27 ``ch2``/``ch2bet``/``ch2better``, INIA19 macaque T1) and
nilearn's MNI152 2009a T1 plus two synthetic contrasts mixed from its grey/white-matter maps (T2-like, PD-like).
Held out for validation (checkpoint choice only): the PD-like contrast, so the validation slices share anatomy
with the MNI152 training volumes but not contrast; ``jhu189`` and the label atlases are parcellations, not images,
and are not used. No
clinical DICOM is used here: real clinical MR found in packages is for evaluation only.

Each sample: a plane (all three orientations), a non-empty slice, a small rotation and flip; either the native
voxel grid or resampled so the longer side fills ``target * zoom``; then :func:`realistic_slice` (Rician noise,
bias field, contrast, 12-bit integers) before or after resampling; per-slice min/max normalisation (as the codec
does); a crop with some signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pacs_cae.codec.normalize import unit_range
from pacs_cae.train.data import MRICRON_TEMPLATES
from pacs_cae.train.mr_realism import realistic_slice
from pacs_cae.train.slices import center_to, fit_to, non_empty_indices
from pacs_cae.train.sources import Volume, load_nifti, mni152_template_path

RD_TRAIN_FILES = ("ch2.nii.gz", "ch2bet.nii.gz", "ch2better.nii.gz", "inia19-t1-brain.nii.gz")
#: Tissue intensities (grey, white, CSF) of the synthetic contrasts mixed from the MNI152 tissue maps.
SYNTHETIC_CONTRASTS = {"mni152-t2like": (0.55, 0.35, 1.0), "mni152-pdlike": (0.85, 0.7, 0.95)}
RD_VAL_NAMES = ("mni152-pdlike",)


def _mricron(names: tuple[str, ...]) -> list[Volume]:
    paths = [MRICRON_TEMPLATES / n for n in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"training volumes missing (apt-get install mricron-data): {missing}")
    return [load_nifti(p) for p in paths]


def mni152_volumes() -> list[Volume]:
    """MNI152 T1 and the synthetic T2-/PD-like contrasts mixed from its tissue probability maps."""
    t1_path = mni152_template_path()
    t1 = load_nifti(t1_path)
    gm = load_nifti(Path(str(t1_path).replace("_t1_", "_gm_"))).data / 255.0
    wm = load_nifti(Path(str(t1_path).replace("_t1_", "_wm_"))).data / 255.0
    brain = t1.data > 0.15 * float(t1.data.max())
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    out = [t1]
    for name, (g, w, c) in SYNTHETIC_CONTRASTS.items():
        out.append(Volume(name, (g * gm + w * wm + c * csf).astype(np.float32), t1.spacing))
    return out


def rd_train_volumes() -> list[Volume]:
    return _mricron(RD_TRAIN_FILES) + [v for v in mni152_volumes() if v.name not in RD_VAL_NAMES]


def rd_val_volumes() -> list[Volume]:
    return [v for v in mni152_volumes() if v.name in RD_VAL_NAMES]


@dataclass
class RealisticCropSampler:
    """Random realistic crops (see module docstring); ``batch`` gives (n, 1, crop, crop) in [0, 1]."""

    volumes: list[Volume]
    crop: int = 128
    target: int = 512
    zoom_range: tuple[float, float] = (0.5, 1.1)
    native_fraction: float = 0.3
    max_rotation_deg: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self._index = [
            (v, axis, keep)
            for v, vol in enumerate(self.volumes)
            for axis in (2, 1, 0)
            if (keep := non_empty_indices(vol.data, axis))
        ]
        if not self._index:
            raise ValueError("no non-empty slices in the training volumes")

    def full_slice(self) -> np.ndarray:
        """One realistic, normalised slice (native grid or ``target`` x ``target``)."""
        from scipy import ndimage

        rng = self.rng
        v, axis, keep = self._index[int(rng.integers(len(self._index)))]
        where: list[int | slice] = [slice(None)] * 3
        where[axis] = int(rng.choice(keep))
        img = np.rot90(self.volumes[v].data[tuple(where)]).astype(np.float32)  # a view, not np.take's copy
        if self.max_rotation_deg > 0:
            angle = rng.uniform(-self.max_rotation_deg, self.max_rotation_deg)
            img = ndimage.rotate(img, angle, reshape=False, order=1, mode="nearest")
        if rng.random() < 0.5:
            img = img[:, ::-1]
        if rng.random() < self.native_fraction:  # native voxel grid, noise per voxel
            img = realistic_slice(center_to(img, max(self.crop, *img.shape)), rng)
        elif rng.random() < 0.5:  # noise, then the scanner's interpolation to the matrix (correlated noise)
            img = fit_to(realistic_slice(img, rng), self.target, scale=rng.uniform(*self.zoom_range))
        else:
            img = realistic_slice(fit_to(img, self.target, scale=rng.uniform(*self.zoom_range)), rng)
        return unit_range(img)

    def crop_of(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape
        crop = img
        for _ in range(8):  # a crop with some signal in it (a few tries, then whatever came)
            y = int(self.rng.integers(0, h - self.crop + 1))
            x = int(self.rng.integers(0, w - self.crop + 1))
            crop = img[y : y + self.crop, x : x + self.crop]
            if crop.mean() > 0.05:
                break
        return np.ascontiguousarray(crop, dtype=np.float32)

    def batch(self, n: int, crops_per_slice: int = 2) -> np.ndarray:
        """(n, 1, crop, crop); ``crops_per_slice`` crops share one prepared slice (preparation is costly)."""
        out: list[np.ndarray] = []
        while len(out) < n:
            img = self.full_slice()
            out += [self.crop_of(img) for _ in range(min(crops_per_slice, n - len(out)))]
        return np.stack(out)[:, None]


def realistic_val_slices(volumes: list[Volume], count: int, target: int, seed: int = 1234) -> np.ndarray:
    """Fixed held-out slices (axial, evenly spaced), fitted to target x target, made realistic once."""
    rng = np.random.default_rng(seed)
    out = []
    per = max(1, count // max(1, len(volumes)))
    for vol in volumes:
        idx = non_empty_indices(vol.data, 2)
        for z in [idx[round(i)] for i in np.linspace(len(idx) * 0.2, len(idx) * 0.8, per)]:
            img = fit_to(np.rot90(vol.data[:, :, z]).astype(np.float32), target)
            out.append(unit_range(realistic_slice(img, rng)))
    return np.stack(out)[:, None].astype(np.float32)
