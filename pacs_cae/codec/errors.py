"""Codec exceptions: one base class so callers (archive, verify) can catch every codec failure at once."""

from __future__ import annotations

from pathlib import Path


class CodecError(Exception):
    """Base class of every error the codec raises on purpose."""


class UnknownModelError(CodecError):
    """A model id (or path) names no model directory with weights and a card."""

    def __init__(self, model_id: str, searched: Path | str, detail: str = "") -> None:
        self.model_id = model_id
        self.searched = Path(searched)
        message = f"unknown model {model_id!r}: no model directory at {self.searched}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class ModelMismatchError(CodecError):
    """A blob was made by a model (id + weights hash) other than the one asked to decode it.

    Decoding with other weights would give plausible-looking garbage pixels, so this is always an error.
    """

    def __init__(self, blob_model: str, blob_sha256: str, loaded_model: str, loaded_sha256: str) -> None:
        self.blob_model = blob_model
        self.blob_sha256 = blob_sha256
        self.loaded_model = loaded_model
        self.loaded_sha256 = loaded_sha256
        super().__init__(
            f"blob was encoded by model {blob_model!r} (weights sha256 {blob_sha256[:16]}...) but the loaded "
            f"model is {loaded_model!r} (weights sha256 {loaded_sha256[:16]}...); load model {blob_model!r} "
            "with those exact weights to decode it"
        )


class WeightsIntegrityError(CodecError):
    """A model's weights file does not hash to the sha256 its card records (damaged or swapped file)."""


class CorruptBlobError(CodecError):
    """A blob is truncated, damaged, or not a blob of a version this build can read."""
