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

    @property
    def supports_max_abs_error(self) -> bool:
        """Whether ``encode(..., max_abs_error=delta)`` guarantees every pixel within delta by construction."""
        ...

    def check_max_abs_error(self, delta: int | None) -> int | None:
        """``delta`` as the int the codec will use (``None`` passes); ``CodecError`` when it cannot be met."""
        ...

    def encode(self, slices: Sequence[np.ndarray], *, bits_stored: PerSlice = None,
               quality: PerSlice = None, max_abs_error: PerSlice = None) -> list[bytes]:
        """Encode 2-D integer slices into self-describing blobs, in input order (``quality`` or a bound)."""
        ...


__all__ = ["BlobDecoder", "PerSlice", "SliceCodec"]
