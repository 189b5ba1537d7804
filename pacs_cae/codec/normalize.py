"""The codec's pre- and post-processing, shared by every model family, training and evaluation.

Encode side (:func:`normalize_slice`): each slice is mapped to [0, 1] by its own min and max, then padded to
a multiple of the network's downscale factor (32 for the paper's five 2x poolings) by **edge replication at the
bottom and right**, so the padding continues the image instead of adding a hard edge the network would have to
spend latent on, and the top-left origin of the original pixels is unchanged.

Decode side (:func:`restore_slice`): crop the padding, map [0, 1] back with the stored min and max, round,
clip to the range BitsStored/PixelRepresentation allow, and return the original dtype.

MONOCHROME1 needs no inversion: the value mapping is kept as-is per slice, and the Photometric
Interpretation attribute travels unchanged with the instance, so a viewer shows the decoded values exactly
as it showed the originals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Height and width must be multiples of this (2 ** number of poolings in the encoder).
PAD_MULTIPLE = 32


@dataclass(frozen=True)
class NormalizedSlice:
    """A slice ready for the network, and what is needed to map the network's output back."""

    data: np.ndarray  # float32, (rows + pad_bottom, columns + pad_right), values in [0, 1]
    rows: int
    columns: int
    pad_bottom: int
    pad_right: int
    dtype: np.dtype
    bits_stored: int
    value_min: int
    value_max: int

    @property
    def pixel_representation(self) -> int:
        """DICOM PixelRepresentation: 1 for two's-complement signed pixels, else 0."""
        return 1 if self.dtype.kind == "i" else 0


def value_range(dtype: np.dtype | type, bits_stored: int | None = None) -> tuple[int, int]:
    """The smallest and largest pixel value BitsStored allows for this integer dtype's signedness."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        raise ValueError(f"pixels must be an integer array, got dtype {dtype}")
    bits = dtype.itemsize * 8 if bits_stored is None else int(bits_stored)
    if not 1 <= bits <= dtype.itemsize * 8:
        raise ValueError(f"bits_stored={bits} does not fit dtype {dtype}")
    if dtype.kind == "i":
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def pad_amount(size: int, multiple: int = PAD_MULTIPLE) -> int:
    """How many rows/columns to add so ``size`` becomes a multiple of ``multiple``."""
    return (-size) % multiple


def normalize_slice(
    pixels: np.ndarray, bits_stored: int | None = None, multiple: int = PAD_MULTIPLE
) -> NormalizedSlice:
    """Per-slice min/max normalisation to [0, 1] plus bottom/right edge padding (see module docstring).

    Raises ``ValueError`` for non-2-D or non-integer input and for values outside BitsStored's range
    (such data cannot be rebuilt faithfully; the archive stores it losslessly instead).
    """
    array = np.asarray(pixels)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"expected a non-empty 2-D slice, got shape {array.shape}")
    if array.shape[0] > 0xFFFF or array.shape[1] > 0xFFFF:
        raise ValueError(f"slice {array.shape} is larger than DICOM's 65535 rows/columns")
    low, high = value_range(array.dtype, bits_stored)
    vmin, vmax = int(array.min()), int(array.max())
    if vmin < low or vmax > high:
        raise ValueError(f"pixel values {vmin}..{vmax} exceed BitsStored range {low}..{high}")
    span = vmax - vmin
    scaled = (array.astype(np.float64) - vmin) / span if span else np.zeros(array.shape)
    rows, columns = array.shape
    pad_b, pad_r = pad_amount(rows, multiple), pad_amount(columns, multiple)
    data = np.pad(scaled.astype(np.float32), ((0, pad_b), (0, pad_r)), mode="edge")
    bits = array.dtype.itemsize * 8 if bits_stored is None else int(bits_stored)
    return NormalizedSlice(data, rows, columns, pad_b, pad_r, array.dtype.newbyteorder("="), bits, vmin, vmax)


def restore_slice(
    data: np.ndarray,
    *,
    rows: int,
    columns: int,
    dtype: np.dtype | str,
    bits_stored: int,
    value_min: int,
    value_max: int,
) -> np.ndarray:
    """Crop to ``rows`` x ``columns``, undo the normalisation, round, clip to BitsStored and cast."""
    dtype = np.dtype(dtype)
    low, high = value_range(dtype, bits_stored)
    cropped = np.asarray(data, dtype=np.float64)[:rows, :columns]
    values = np.rint(cropped * (value_max - value_min) + value_min)
    return np.clip(values, low, high).astype(dtype)


def unit_range(values: np.ndarray) -> np.ndarray:
    """Per-slice min/max to [0, 1] in float32 (a constant slice maps to 0): the mapping of
    :func:`normalize_slice` without the integer checks and padding, for float data (training crops)."""
    array = np.asarray(values)
    vmin, vmax = float(array.min()), float(array.max())
    if vmax <= vmin:
        return np.zeros(array.shape, dtype=np.float32)
    return ((array.astype(np.float64) - vmin) / (vmax - vmin)).astype(np.float32)


__all__ = ["PAD_MULTIPLE", "NormalizedSlice", "normalize_slice", "pad_amount", "restore_slice", "unit_range",
           "value_range"]
