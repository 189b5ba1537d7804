"""Shared fixtures for the codec tests: the shipped untrained checkpoint and small synthetic slices."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from pacs_cae.codec import Codec, load_codec
from pacs_cae.codec.weights import initial_model, save_model

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


@pytest.fixture(scope="session")
def codec() -> Codec:
    """The shipped untrained checkpoint on CPU in the default mode."""
    return load_codec(TEST_MODEL, device="cpu", models_dir=MODELS_DIR)


@pytest.fixture(scope="session")
def other_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding a *different* network under the same id and under the id ``other``."""
    base = tmp_path_factory.mktemp("models")
    save_model(initial_model(seed=1), base / TEST_MODEL, model_id=TEST_MODEL, trained=False)
    save_model(initial_model(seed=2), base / "other", model_id="other", trained=False)
    return base


@pytest.fixture(scope="session")
def make_phantom() -> Phantom:
    """``make_phantom(rows, columns, dtype="uint16", bits=12, seed=0)`` -> synthetic slice."""
    return phantom
