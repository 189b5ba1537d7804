"""Near-lossless residual refinement: the high-quality operating points of the ``mshp`` codec.

The learned transform caps out near the noise level of real MR: ``y`` holds 96 numbers per 16x16 block (0.375
per pixel), so it cannot carry white scanner noise and its reconstruction saturates around 30 dB on noisy
slices, whatever its rate (measured: ``models/mshp-v1/README.md``). Above that, an operating point codes the
integer residual ``r = x - x_hat`` of the learned reconstruction with a uniform quantizer of odd step
``2 delta + 1`` (``delta`` = the largest error allowed, JPEG-LS' NEAR), entropy coded with the Gaussian integer
tables, one table per :data:`BLOCK` x :data:`BLOCK` block chosen by the encoder from the block's own spread
(forward adaptation: the table map travels in the stream, 6 bits per block, so background, tissue and edges
each get a fitting model and the decoder needs nothing it could compute differently). The step is derived per slice from
the operating point's PSNR target and the slice's own range, so every slice meets its target and no pixel is
off by more than ``delta`` (``delta = 0``: lossless). In version-3 blobs the decoder rebuilt ``x_hat`` in its own
execution mode, so another mode could round a rare ``x_hat`` pixel the other way; version 4 rebuilds it
exactly (``exact``), so ``|x - y| <= delta`` holds for every pixel wherever the blob is decoded, and a
``max_abs_error`` bound can be promised (``delta`` chosen by the caller instead of a PSNR target).
"""

from __future__ import annotations

import math

import numpy as np

from ..container import NO_RESIDUAL
from ..errors import CorruptBlobError
from .coder import TableCoder
from .tables import PRECISION

#: Largest delta a blob can record (NO_RESIDUAL is reserved).
MAX_DELTA = NO_RESIDUAL - 1
#: Side of the square blocks that each get their own table.
BLOCK = 16


def delta_for(target_db: float, value_range: int) -> int:
    """Largest ``delta`` whose uniform-quantization MSE ((s^2 - 1) / 12, s = 2 delta + 1) meets the target."""
    if value_range <= 0:
        return 0
    mse = value_range * value_range * 10 ** (-target_db / 10)
    step = math.sqrt(12 * mse + 1)
    return max(0, min(MAX_DELTA, int((step - 1) // 2)))


def quantize_for_target(residual: np.ndarray, target_db: float, value_range: int) -> tuple[np.ndarray, int]:
    """(symbols, delta) meeting ``target_db`` on this slice: start from :func:`delta_for` (exact for a
    uniform error) and lower ``delta`` while the measured error misses the target (peaked residuals)."""
    delta = delta_for(target_db, value_range)
    allowed = value_range * value_range * 10 ** (-target_db / 10)
    while True:
        symbols = quantize(residual, delta)
        error = residual.astype(np.int64) - dequantize(symbols, delta)
        if delta == 0 or float(np.mean(error * error)) <= allowed:
            return symbols, delta
        delta -= 1


def quantize(residual: np.ndarray, delta: int) -> np.ndarray:
    """Integer residual -> bin indices of width ``2 delta + 1`` centred on 0 (|error| <= delta)."""
    step = 2 * delta + 1
    r = residual.astype(np.int64)
    return np.sign(r) * ((np.abs(r) + delta) // step)


def dequantize(symbols: np.ndarray, delta: int) -> np.ndarray:
    return symbols.astype(np.int64) * (2 * delta + 1)


def block_index(shape: tuple[int, int]) -> np.ndarray:
    """Flat block number of every pixel (row-major blocks of BLOCK x BLOCK)."""
    rows, cols = shape
    per_row = -(-cols // BLOCK)
    return ((np.arange(rows) // BLOCK)[:, None] * per_row + (np.arange(cols) // BLOCK)[None, :]).ravel()


def block_tables(symbols: np.ndarray, coder: TableCoder, scales: np.ndarray) -> np.ndarray:
    """Per block, the table whose scale is nearest above the block's RMS symbol (a Gaussian's best fit)."""
    blocks = block_index(symbols.shape)
    count = np.bincount(blocks)
    power = np.bincount(blocks, weights=symbols.astype(np.float64).ravel() ** 2)
    rms = np.sqrt(power / np.maximum(count, 1))
    return np.minimum(np.searchsorted(scales, rms, side="left"), scales.size - 1).astype(np.int64)


def coded_bits(symbols: np.ndarray, coder: TableCoder, scales: np.ndarray) -> float:
    """Bits the residual layer will take for ``symbols`` (table map + symbols, escapes at +32 bits)."""
    tables = coder.tables
    table_map = block_tables(symbols, coder, scales)
    rows = table_map[block_index(symbols.shape)]
    index = symbols.ravel().astype(np.int64) - tables.offset[rows]
    inside = (index >= 0) & (index < tables.length[rows])
    index = np.where(inside, index, tables.length[rows])
    bits = -np.log2(tables.freq[rows, index] / (1 << PRECISION)).sum() + 32 * float((~inside).sum())
    return float(bits) + table_map.size * math.log2(scales.size)


def reconstruct(x_hat: np.ndarray, symbols: np.ndarray, delta: int, value_min: int, value_max: int) -> np.ndarray:
    """``x_hat + q (2 delta + 1)`` clipped to the slice's stored range (int64): within ``delta`` of the original."""
    values = x_hat.astype(np.int64) + dequantize(symbols, delta).reshape(x_hat.shape)
    return np.clip(values, value_min, value_max)


def encode_blocks(coder: object, symbols: np.ndarray, tables: TableCoder, scales: np.ndarray,
                  table_choice: object) -> np.ndarray:
    """Push the residual symbols with per-block tables, then the table map (decoded first); returns overflow."""
    table_map = block_tables(symbols, tables, scales)
    overflow = tables.encode(coder, symbols.ravel(), table_map[block_index(symbols.shape)])
    coder.encode_reverse(table_map.astype(np.int32), table_choice)  # type: ignore[attr-defined]
    return overflow


def decode_blocks(coder: object, shape: tuple[int, int], tables: TableCoder, table_choice: object,
                  overflow: np.ndarray) -> tuple[np.ndarray, int]:
    """Pop what :func:`encode_blocks` pushed: (symbols of ``shape``, overflow values used)."""
    blocks = block_index(shape)
    try:
        table_map = np.asarray(coder.decode(table_choice, int(blocks.max()) + 1))  # type: ignore[attr-defined]
    except Exception as exc:  # constriction: exhausted or inconsistent stream
        raise CorruptBlobError(f"entropy-coded stream is damaged: {exc}") from exc
    symbols, used = tables.decode(coder, table_map.astype(np.int64)[blocks], overflow)
    return symbols.reshape(shape), used
