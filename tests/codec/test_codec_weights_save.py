"""Saving the same weights twice gives the same file: a model's sha256 names its weights, nothing else."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pacs_cae.codec.weights import initial_model, save_model


def test_same_weights_same_sha256(tmp_path: Path) -> None:
    model = initial_model(seed=0)
    digests = set()
    for i in range(3):
        save_model(model, tmp_path / f"m{i}", model_id="same", trained=False)
        digests.add(hashlib.sha256((tmp_path / f"m{i}" / "model.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
