"""The codec contract: what every model family (``Codec``, ``RDCodec``) and the ``BatchingCodec`` offer.

Callers (archive ingest, compression workers, retrieve, evaluation, the CLI) type against these Protocols
instead of declaring their own or reading attributes with ``getattr``: a slice codec encodes 2-D integer
slices into self-describing blobs and decodes blobs it made back to the same shape and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from .weights import ModelCard

#: One value for every slice, or one per slice (``None``: the default).
PerSlice = int | Sequence[int | None] | None


class BlobDecoder(Protocol):
    """Decodes blobs into slices of their original shape and dtype, in input order."""

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]: ...


class SliceCodec(BlobDecoder, Protocol):
    """One loaded model: ``encode`` slices, ``decode`` its own blobs, and what identifies it."""

    @property
    def model_id(self) -> str:
        """The id every blob records (the model's directory name)."""
        ...

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the exact weights file; a blob only decodes with these weights."""
        ...

    @property
    def card(self) -> ModelCard | None:
        """The model card (architecture, training data, measured figures)."""
        ...

    @property
    def qualities(self) -> int | None:
        """Number of operating points ``quality`` can pick (None: a single one)."""
        ...

    @property
    def device(self) -> torch.device: ...

    def encode(self, slices: Sequence[np.ndarray], *, bits_stored: PerSlice = None,
               quality: PerSlice = None) -> list[bytes]:
        """Encode 2-D integer slices into self-describing blobs, in input order."""
        ...


__all__ = ["BlobDecoder", "PerSlice", "SliceCodec"]
