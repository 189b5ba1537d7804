"""Make template slices look like scanner MR: Rician noise at clinical SNRs, bias fields, contrast, 12-bit.

Brain templates are averages: smooth, noiseless, 8-bit. Real clinical magnitude MR has Rician noise (Rayleigh
in the background air), a smooth multiplicative coil-sensitivity ("bias") field, varied contrast and integer
12-bit values. A codec trained on smooth templates spends nothing on noise and then fails on real data (the
probe in ANCHORS.md), so every training (and validation) slice goes through :func:`realistic_slice`.
"""

from __future__ import annotations

import numpy as np

#: Clinical SNR range (mean tissue signal / noise sigma), sampled log-uniformly.
SNR_RANGE = (6.0, 80.0)


def bias_field(shape: tuple[int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth positive field exp(g), g a low-frequency random surface of std ~``strength``."""
    from scipy import ndimage

    coarse = ndimage.zoom(rng.normal(0.0, strength, (4, 4)), 8, order=3, mode="nearest")  # smooth 32x32
    field = ndimage.zoom(np.exp(coarse).astype(np.float32), (shape[0] / 32, shape[1] / 32), order=1)
    return field[: shape[0], : shape[1]]


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise of ``sigma`` on both channels."""
    real = signal + np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def realistic_slice(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A [0, 1]-normalised slice -> integer-valued (float32) 12-bit-like magnitude slice with noise."""
    lo, hi = float(img.min()), float(img.max())
    x = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    x = x ** rng.uniform(0.6, 1.6)  # contrast change
    if rng.random() < 0.8:
        x = x * bias_field(x.shape, rng, rng.uniform(0.05, 0.3))
    tissue = x[x > 0.1 * max(float(x.max()), 1e-6)]
    mean_signal = float(tissue.mean()) if tissue.size else 1.0
    snr = float(np.exp(rng.uniform(*np.log(SNR_RANGE))))
    x = rician(x, mean_signal / snr, rng)
    peak = rng.uniform(600.0, 4095.0)  # stored integer range of the series
    return np.clip(np.round(x / max(float(x.max()), 1e-6) * peak), 0, 4095).astype(np.float32)
