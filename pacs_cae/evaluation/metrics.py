"""The figures every evaluation reports, defined once so the table, the JSON and the model card agree.

MSE, PSNR and the maximum error are the codec's own (:mod:`pacs_cae.codec.metrics`, shared with the quality
gate and training); this module adds the background mask, bits per pixel and the ratios.

Definitions (also printed by ``pacs-cae evaluate`` and written in ``docs/evaluation.md``):

* ``MSE`` -- mean of (original - decoded)² over all pixels, in stored pixel units.
* ``PSNR`` -- 10·log10(R² / MSE) with R = max - min of the *original* slice (the paper's per-image
  normalisation); +inf when MSE = 0 (lossless).
* ``PSNR (non-background)`` -- the same R, MSE over the pixels whose original value is at least
  min + 5 % of R, so air around the head does not flatter the figure.
* ``bpp`` -- compressed bytes × 8 / (rows × columns).
* ``ratio (stored)`` -- rows × columns × BitsAllocated / 8 bytes, divided by the compressed bytes.
* ``ratio (float32)`` -- rows × columns × 4 bytes / compressed bytes: the paper's "compression ratio",
  which counts each pixel as a float32 and so reads 2x higher than the stored ratio for 16-bit pixels.
"""

from __future__ import annotations

import numpy as np

from pacs_cae.codec.metrics import dynamic_range, max_abs_error, mse, psnr_db

#: Pixels below min + this fraction of the slice's range are background (air).
BACKGROUND_FRACTION = 0.05

DEFINITIONS: dict[str, str] = {
    "MSE": "mean((original - decoded)^2) over all pixels, stored pixel units",
    "PSNR": "10*log10(R^2/MSE), R = max - min of the original slice (per image, as the paper); inf if MSE=0",
    "PSNR_fg": "PSNR with the same R, MSE over non-background pixels: original >= min + 5% of R",
    "bpp": "compressed bytes * 8 / (rows * columns)",
    "ratio_stored": "rows*columns*BitsAllocated/8 / compressed bytes",
    "ratio_float32": "rows*columns*4 / compressed bytes (the paper's float32-based ratio)",
    "summary": (
        "PSNR/PSNR_fg: mean over slices with finite PSNR (inf only if every slice is exact; "
        "exact_slices counts them); MSE: mean of per-slice values; bpp and ratios: from total bytes"
    ),
}


def background_mask(original: np.ndarray, fraction: float = BACKGROUND_FRACTION) -> np.ndarray:
    """True where the pixel is background: below min + ``fraction`` of the slice range."""
    lo = float(original.min())
    return original.astype(np.float64) < lo + fraction * dynamic_range(original)


def bits_per_pixel(compressed_bytes: int, rows: int, columns: int) -> float:
    return compressed_bytes * 8 / (rows * columns)


def stored_bytes(rows: int, columns: int, bits_allocated: int) -> int:
    """The uncompressed Pixel Data size of one slice at its BitsAllocated."""
    return rows * columns * bits_allocated // 8


def float32_bytes(rows: int, columns: int) -> int:
    """The paper's reference size: every pixel a float32."""
    return rows * columns * 4


def slice_metrics(
    original: np.ndarray, decoded: np.ndarray, compressed_bytes: int, bits_allocated: int
) -> dict:
    """One Table-4 row (plus the extra columns) for one slice and one codec."""
    rows, columns = original.shape
    r = dynamic_range(original)
    err = mse(original, decoded)
    fg = ~background_mask(original)
    err_fg = mse(original, decoded, fg)
    original_bytes = stored_bytes(rows, columns, bits_allocated)
    return {
        "psnr_db": psnr_db(err, r),  # NaN for a flat original decoded with error: left out of means
        "psnr_fg_db": psnr_db(err_fg, r),
        "mse": err,
        "max_abs_error": max_abs_error(original, decoded),
        "original_bytes": original_bytes,
        "compressed_bytes": int(compressed_bytes),
        "bpp": bits_per_pixel(compressed_bytes, rows, columns),
        "ratio_stored": original_bytes / compressed_bytes,
        "ratio_float32": float32_bytes(rows, columns) / compressed_bytes,
    }
