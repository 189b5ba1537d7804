"""Constants and the synthetic-slice generator of the codec tests (importable by name, unlike conftest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "models"
TEST_MODEL = "cae-paper-init"

#: The type of the ``make_phantom`` fixture.
Phantom = Callable[..., np.ndarray]


def phantom(rows: int, columns: int, dtype: str = "uint16", bits: int = 12, seed: int = 0) -> np.ndarray:
    """A smooth head-like phantom with mild noise, spanning most of the BitsStored range of ``dtype``."""
    dt = np.dtype(dtype)
    lo = -(1 << (bits - 1)) if dt.kind == "i" else 0
    hi = (1 << (bits - 1)) - 1 if dt.kind == "i" else (1 << bits) - 1
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
    r = np.hypot((y - rows / 2) / (rows / 2.2), (x - columns / 2) / (columns / 2.6))
    image = np.clip(1.2 - r, 0, 1) + 0.15 * np.sin(x / 5.0) * np.cos(y / 7.0)
    image += np.random.default_rng(seed).normal(0, 0.02, image.shape)
    image = (image - image.min()) / (image.max() - image.min())
    return np.rint(lo + image * (hi - lo)).astype(dt)

#: The shipped rate-distortion model (the real, trained one).
RD_MODEL = "mshp-v1"
