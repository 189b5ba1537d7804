"""The lossless path returns exactly the bytes it was given, for every layout, and detects damage."""

from __future__ import annotations

import numpy as np
import pytest
from codec_helpers import Phantom  # tests/codec is on sys.path under pytest

from pacs_cae.codec import CorruptBlobError, PixelLayout, decode_lossless, encode_lossless, lossless


def _method(blob: bytes) -> int:
    return blob[5]


@pytest.mark.parametrize(
    ("dtype", "bits", "shape"),
    [("uint8", 8, (1, 7, 13)), ("int8", 8, (1, 9, 9)), ("uint16", 12, (1, 33, 17)),
     ("int16", 12, (3, 31, 29)), ("int16", 16, (1, 64, 65)), ("uint16", 16, (2, 5, 3))],
)
def test_native_monochrome_round_trips_exactly(
    dtype: str, bits: int, shape: tuple[int, int, int], make_phantom: Phantom
) -> None:
    frames = np.stack([make_phantom(*shape[1:], dtype, bits, seed=s) for s in range(shape[0])])
    frames.flat[0] = np.iinfo(dtype).min  # full-range extremes, including the sign bit
    frames.flat[-1] = np.iinfo(dtype).max
    data = frames.astype(frames.dtype.newbyteorder("<")).tobytes()
    if len(data) % 2:
        data += b"\0"  # DICOM's even-length pad byte must survive too
    layout = PixelLayout(rows=shape[1], columns=shape[2], bits_allocated=8 * frames.itemsize,
                         pixel_representation=int(dtype.startswith("int")), frames=shape[0])
    blob = encode_lossless(data, layout)
    assert decode_lossless(blob) == data
    if lossless._HAVE_JPEGLS and frames.size >= 100:
        assert _method(blob) == lossless.METHOD_JPEGLS


def test_jpegls_compresses_smooth_mr_like_data(make_phantom: Phantom) -> None:
    if not lossless._HAVE_JPEGLS:
        pytest.skip("this imagecodecs build has no JPEG-LS; Brotli is used (covered by the other tests)")
    data = make_phantom(128, 128, "int16", 12).astype("<i2").tobytes()
    blob = encode_lossless(data, PixelLayout(128, 128, 16, 1))
    assert _method(blob) == lossless.METHOD_JPEGLS and len(blob) < len(data) / 1.5


@pytest.mark.parametrize(
    "layout",
    [None, PixelLayout(4, 4, 8, samples_per_pixel=3), PixelLayout(100, 100, 16), PixelLayout(3, 3, 32)],
)
def test_anything_else_goes_through_brotli(layout: PixelLayout | None) -> None:
    data = bytes(np.random.default_rng(0).integers(0, 256, 301, dtype=np.uint8)) + b"\0" * 400
    blob = encode_lossless(data, layout)
    assert _method(blob) == lossless.METHOD_BROTLI
    assert decode_lossless(blob) == data
    assert decode_lossless(encode_lossless(b"")) == b""


def test_damage_and_truncation_are_detected(make_phantom: Phantom) -> None:
    data = make_phantom(32, 32, "uint16", 12).tobytes()
    for blob in (encode_lossless(data, PixelLayout(32, 32, 16)), encode_lossless(data)):
        for cut in (0, 10, len(blob) // 2, len(blob) - 1):
            with pytest.raises(CorruptBlobError):
                decode_lossless(blob[:cut])
        damaged = bytearray(blob)
        damaged[len(blob) * 2 // 3] ^= 0x10
        with pytest.raises(CorruptBlobError):
            decode_lossless(bytes(damaged))
    with pytest.raises(CorruptBlobError, match="magic"):
        decode_lossless(b"PCAE" + bytes(40))
