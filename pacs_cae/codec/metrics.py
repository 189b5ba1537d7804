"""Distortion metrics, defined once for the quality gate, evaluation and training.

PSNR = 10·log10(R² / MSE) with R = max - min of the *original* slice (per image, as the paper does) and the
MSE in stored pixel units; training passes R = 1 on slices already normalised to [0, 1]. A perfect
reconstruction is +inf. A flat original (R = 0) decoded with any error has no defined PSNR: the caller says
what that means (``undefined``): the quality gate counts it as -inf (it never passes a floor), evaluation as
NaN (left out of averages).
"""

from __future__ import annotations

import math

import numpy as np


def dynamic_range(original: np.ndarray) -> float:
    """R = max - min of the original slice (0 for a constant slice)."""
    return float(np.max(original)) - float(np.min(original))


def mse(original: np.ndarray, decoded: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error in stored pixel units (float64), optionally over ``mask`` only."""
    if original.shape != decoded.shape:
        raise ValueError(f"decoded shape {decoded.shape} differs from the original {original.shape}")
    diff = original.astype(np.float64) - decoded.astype(np.float64)
    if mask is not None:
        diff = diff[mask]
    return float(np.mean(diff * diff)) if diff.size else 0.0


def max_abs_error(original: np.ndarray, decoded: np.ndarray) -> float:
    """The largest absolute pixel difference (0 for empty slices)."""
    diff = original.astype(np.float64) - decoded.astype(np.float64)
    return float(np.max(np.abs(diff))) if diff.size else 0.0


def psnr_db(error: float, value_range: float, *, undefined: float = math.nan) -> float:
    """10·log10(R²/MSE) from an MSE; +inf when ``error`` is 0, ``undefined`` when R is 0 (see module doc)."""
    if error <= 0:
        return math.inf
    if value_range <= 0:
        return undefined
    return 10.0 * math.log10(value_range * value_range / error)


def psnr(original: np.ndarray, decoded: np.ndarray, *, undefined: float = math.nan) -> float:
    """PSNR of a decoded slice against its original, R = the original's max - min."""
    return psnr_db(mse(original, decoded), dynamic_range(original), undefined=undefined)


__all__ = ["dynamic_range", "max_abs_error", "mse", "psnr", "psnr_db"]
