"""Pixel handling between DICOM datasets and arrays: decoding a dataset's frames, writing Pixel Data back.

The codec's own pre/post-processing (normalisation to [0, 1], padding, restoring BitsStored) lives in
:mod:`pacs_cae.codec.normalize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from pacs_cae.dicom.metadata import received_transfer_syntax
from pacs_cae.dicom.transcode import decoding_plugin


@dataclass(frozen=True)
class DatasetPixels:
    """The frames of a monochrome dataset as 2-D arrays, with the attributes that bound their values."""

    frames: list[np.ndarray]
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str


def extract_frames(ds: Dataset) -> DatasetPixels:
    """Decode a dataset's pixels (any transfer syntax pydicom can decode) into per-frame 2-D arrays.

    Only single-sample (monochrome) data is returned; anything else raises ``ValueError`` so the caller
    can route it to the lossless path.
    """
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise ValueError(f"not monochrome pixel data ({photometric}, {samples} samples per pixel)")
    syntax = received_transfer_syntax(ds)
    if syntax.is_compressed:
        # the same decoder on every install (Pillow, when present, would round lossy JPEG differently), so
        # the codec sees the same pixels whatever optional packages a site has
        ds.pixel_array_options(decoding_plugin=decoding_plugin(syntax))
    array = ds.pixel_array
    frames_count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames_count > 1 or array.ndim == 3:
        frames = [np.ascontiguousarray(f) for f in array.reshape(-1, *array.shape[-2:])]
    else:
        frames = [np.ascontiguousarray(array)]
    return DatasetPixels(
        frames=frames,
        bits_allocated=int(ds.BitsAllocated),
        bits_stored=int(getattr(ds, "BitsStored", ds.BitsAllocated)),
        pixel_representation=int(getattr(ds, "PixelRepresentation", 0)),
        photometric_interpretation=photometric,
    )


def frames_to_pixel_data(
    frames: Sequence[np.ndarray], bits_allocated: int, pixel_representation: int
) -> bytes:
    """Native little-endian Pixel Data bytes for these frames, padded to an even length as DICOM requires."""
    if bits_allocated not in (8, 16, 32):
        raise ValueError(f"unsupported BitsAllocated {bits_allocated}")
    dtype = np.dtype(f"<{'i' if pixel_representation else 'u'}{bits_allocated // 8}")
    data = b"".join(np.ascontiguousarray(f).astype(dtype).tobytes() for f in frames)
    return data + b"\0" if len(data) % 2 else data
