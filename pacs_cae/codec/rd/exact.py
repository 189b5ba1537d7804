"""Exact pixels: the same decoded integers in every execution mode, on every machine, at every batch size.

Version-4 blobs run the whole transform path (``g_a``, ``h_a``, ``g_s``) in float64, one slice at a time, so
the reconstruction before rounding differs between modes, thread counts, batch sizes and devices by ~1e-15 of
the slice's range (measured: 0 between thread counts and batch sizes, 9e-16 between memory layouts). That
alone makes a wrong rounding improbable, not impossible: a value can sit on a rounding boundary. So the
encoder, which computes the same float64 values, lists every pixel within :data:`TIE_EPS` of the range of a
boundary together with the integer it rounded it to (usually none, a few per slice at 16 bits), and the
decoder takes those from the blob and rounds the rest -- ~1e6 times farther from a boundary than float64 can
move them. A wrong pixel would need two float64 implementations to differ by 1e-9 of the range.
"""

from __future__ import annotations

import numpy as np

from ..errors import CorruptBlobError

#: Half-width, in units of the slice's value range, of the band around a rounding boundary whose pixels the
#: encoder states explicitly (float64 differences between modes are ~1e-15 of the range).
TIE_EPS = 2.0**-30


def level_values(image: np.ndarray, rows: int, columns: int, value_min: int, value_max: int) -> np.ndarray:
    """The float64 synthesis output ([0, 1] slice, padded) as unrounded stored levels of the original crop."""
    cropped = np.clip(np.asarray(image, dtype=np.float64)[:rows, :columns], 0.0, 1.0)
    return cropped * float(value_max - value_min) + float(value_min)


def find_ties(values: np.ndarray, value_min: int, value_max: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat positions, rounded values) of the pixels too close to a rounding boundary to trust elsewhere."""
    eps = TIE_EPS * max(1, value_max - value_min)
    frac = values - np.floor(values)
    positions = np.flatnonzero(np.abs(frac - 0.5) < eps)
    return positions.astype(np.int64), np.rint(values.ravel()[positions]).astype(np.int64)


def round_levels(values: np.ndarray, positions: np.ndarray, tie_values: np.ndarray, value_min: int,
                 value_max: int) -> np.ndarray:
    """Integer levels (int64): the stated ties from the blob, every other pixel rounded here.

    Raises ``CorruptBlobError`` for ties outside the slice or outside its value range (damaged data)."""
    out = np.rint(values).astype(np.int64)
    if positions.size:
        if (int(positions.max()) >= out.size or np.any(np.diff(positions) <= 0)
                or int(tie_values.min()) < value_min or int(tie_values.max()) > value_max):
            raise CorruptBlobError("blob lists rounding ties outside the slice or its value range")
        out.ravel()[positions] = tie_values
    return out
