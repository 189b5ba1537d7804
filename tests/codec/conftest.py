"""Shared fixtures for the codec tests: the shipped untrained checkpoint and small synthetic slices."""

from __future__ import annotations

from pathlib import Path

import pytest
from codec_helpers import MODELS_DIR, TEST_MODEL, Phantom, phantom

from pacs_cae.codec import Codec, load_codec
from pacs_cae.codec.weights import initial_model, save_model


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
