"""A test double for a multi-point learned codec whose rate-distortion curve is known in advance.

``PaddedJ2K`` is JPEG 2000 at the baselines' PSNR targets with every blob padded to ``factor`` times the
codestream's size: the same distortion at ``factor`` x the bits, so its BD-rate against JPEG 2000 is
``factor - 1`` (up to the rounding of each blob to whole bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import imagecodecs
import numpy as np

from pacs_cae.evaluation.baselines import J2K_TARGET_PSNR_DB, _j2k_encode

HEADER = struct.Struct("<IHHBi")  # codestream length, rows, columns, dtype code, offset (signed slices)


class PaddedJ2K:
    """Implements the evaluation interface: ``model_id``, ``qualities``, ``encode(..., quality=)``, ``decode``."""

    def __init__(self, factor: float = 1.25, qualities: Sequence[int] = J2K_TARGET_PSNR_DB) -> None:
        self.model_id = "padded-j2k"
        self.qualities = tuple(qualities)
        self.factor = factor
        self.device = "cpu"
        self.calls: list[int | None] = []

    def encode(self, slices: Sequence[np.ndarray], *, bits_stored: int | Sequence[int | None] | None = None,
               quality: int | None = None) -> list[bytes]:
        if quality not in self.qualities:
            raise ValueError(f"no quality {quality}")
        self.calls.append(quality)
        if bits_stored is None or isinstance(bits_stored, int):
            bits_stored = [bits_stored] * len(slices)
        blobs = []
        for pixels, bits in zip(slices, bits_stored, strict=True):
            offset = int(pixels.min()) if pixels.dtype.kind == "i" else 0
            shifted = (pixels.astype(np.int64) - offset).astype(np.uint16)
            stream = _j2k_encode(quality)(shifted, max(int(bits or 16), int(shifted.max()).bit_length()))
            head = HEADER.pack(len(stream), *pixels.shape, 1 if pixels.dtype == np.uint16 else 2, offset)
            total = max(round(self.factor * len(stream)), HEADER.size + len(stream))  # header inside the padding
            blobs.append(head + stream + b"\0" * (total - HEADER.size - len(stream)))
        return blobs

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        out = []
        for blob in blobs:
            length, rows, columns, code, offset = HEADER.unpack_from(blob)
            pixels = imagecodecs.jpeg2k_decode(blob[HEADER.size : HEADER.size + length]).reshape(rows, columns)
            out.append((pixels.astype(np.int64) + offset).astype(np.uint16 if code == 1 else np.int16))
        return out
