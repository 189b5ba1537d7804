"""The lossless path returns exactly the bytes it was given, for every layout, and detects damage."""

from __future__ import annotations

import numpy as np
import pytest
from codec_helpers import Phantom  # tests/codec is on sys.path under pytest

from pacs_cae.codec import CorruptBlobError, PixelLayout, decode_lossless, encode_lossless, lossless


def _methods(blob: bytes) -> set[str]:
    return set(lossless.frame_methods(blob))


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
        assert _methods(blob) == {"jpeg-ls"}


def test_jpegls_compresses_smooth_mr_like_data(make_phantom: Phantom) -> None:
    if not lossless._HAVE_JPEGLS:
        pytest.skip("this imagecodecs build has no JPEG-LS; Brotli is used (covered by the other tests)")
    data = make_phantom(128, 128, "int16", 12).astype("<i2").tobytes()
    blob = encode_lossless(data, PixelLayout(128, 128, 16, 1))
    assert _methods(blob) == {"jpeg-ls"} and len(blob) < len(data) / 1.5


@pytest.mark.parametrize(
    "layout",
    [None, PixelLayout(4, 4, 8, samples_per_pixel=3), PixelLayout(100, 100, 16), PixelLayout(3, 3, 32)],
)
def test_anything_else_goes_through_brotli(layout: PixelLayout | None) -> None:
    data = bytes(np.random.default_rng(0).integers(0, 256, 301, dtype=np.uint8)) + b"\0" * 400
    blob = encode_lossless(data, layout)
    assert _methods(blob) == {"brotli"}
    assert decode_lossless(blob) == data
    assert decode_lossless(encode_lossless(b"")) == b""


@pytest.mark.parametrize("layout", [PixelLayout(64, 48, 16, 1), PixelLayout(64, 48, 16, 0, frames=2), None])
def test_lossless_size_is_the_length_encode_lossless_gives(layout: PixelLayout | None,
                                                          make_phantom: Phantom) -> None:
    frames = [make_phantom(64, 48, "int16", 12, seed=s) for s in range(2)]
    data = b"".join(f.astype("<i2").tobytes() for f in frames)
    for methods in (("jpeg-ls",), ("jpeg-ls", "jpeg-2000")):
        assert lossless.lossless_size(data, layout, methods=methods) == len(encode_lossless(data, layout,
                                                                                            methods=methods))


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


def _layout_of(frames: np.ndarray) -> PixelLayout:
    return PixelLayout(rows=frames.shape[1], columns=frames.shape[2], bits_allocated=8 * frames.itemsize,
                       pixel_representation=int(frames.dtype.kind == "i"), frames=frames.shape[0])


@pytest.mark.parametrize("method", lossless.STANDARD_METHODS)
@pytest.mark.parametrize(("dtype", "bits"), [("uint16", 12), ("int16", 16), ("uint8", 8), ("int8", 8)])
def test_every_standard_method_alone_round_trips_exactly(method: str, dtype: str, bits: int,
                                                         make_phantom: Phantom) -> None:
    if not lossless._AVAILABLE[method]:
        pytest.skip(f"this imagecodecs build has no {method}")
    frames = np.stack([make_phantom(48, 40, dtype, bits, seed=s) for s in range(2)])
    frames.flat[0], frames.flat[-1] = np.iinfo(dtype).min, np.iinfo(dtype).max
    data = frames.astype(frames.dtype.newbyteorder("<")).tobytes()
    blob = encode_lossless(data, _layout_of(frames), methods=(method,))
    assert decode_lossless(blob) == data
    assert _methods(blob) == {method}


def test_the_smallest_verified_method_wins_per_frame(make_phantom: Phantom) -> None:
    frames = np.stack([make_phantom(96, 96, "uint16", 12, seed=s) for s in range(3)])
    data = frames.astype("<u2").tobytes()
    layout = _layout_of(frames)
    blob = encode_lossless(data, layout, methods=lossless.SMALLEST_METHODS)
    assert decode_lossless(blob) == data
    available = [m for m in lossless.STANDARD_METHODS if lossless._AVAILABLE[m]]
    alone = {m: len(encode_lossless(data, layout, methods=(m,))) for m in available}
    assert len(blob) <= min(alone.values())  # per frame, never worse than the best single method


def test_unknown_method_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown lossless method"):
        encode_lossless(bytes(64), PixelLayout(4, 8, 16), methods=("png",))


def test_version_1_blobs_still_decode(make_phantom: Phantom) -> None:
    """A blob written by the first release (JPEG-LS frames with a length table, and Brotli)."""
    if not lossless._HAVE_JPEGLS:
        pytest.skip("this imagecodecs build has no JPEG-LS")
    import struct
    import zlib

    import brotli  # type: ignore[import-untyped]
    import imagecodecs

    frames = np.stack([make_phantom(32, 24, "int16", 12, seed=s) for s in range(2)])
    data = frames.astype("<i2").tobytes() + b"\0\0"
    flipped = frames.view("<u2") ^ np.uint16(0x8000)
    streams = [bytes(imagecodecs.jpegls_encode(np.ascontiguousarray(f))) for f in flipped]
    header = struct.pack("<4sBBBBIIIQI", b"PCLL", 1, 2, 1, 2, 32, 24, 2, len(data), zlib.crc32(data))
    v1_jpegls = header + b"".join(struct.pack("<I", len(s)) for s in streams) + b"".join(streams) + b"\0\0"
    v1_brotli = struct.pack("<4sBBBBIIIQI", b"PCLL", 1, 1, 0, 1, 0, 0, 0, len(data), zlib.crc32(data)) + \
        brotli.compress(data)
    assert decode_lossless(v1_jpegls) == data and lossless.frame_methods(v1_jpegls) == ["jpeg-ls"] * 2
    assert decode_lossless(v1_brotli) == data


def _learned_fake(frames: np.ndarray) -> tuple[lossless.LearnedCandidate, dict[bytes, np.ndarray]]:
    """Stand-in learned streams: tiny tokens that "decode" (through a lookup) to the frames."""
    table = {f"L{i}".encode(): f.copy() for i, f in enumerate(frames)}
    return lossless.LearnedCandidate(list(table), list(table.values())), table


def test_an_exact_learned_stream_is_used_where_smallest_and_needs_its_decoder(make_phantom: Phantom) -> None:
    frames = np.stack([make_phantom(64, 64, "int16", 12, seed=s) for s in range(2)])
    data = frames.astype("<i2").tobytes()
    candidate, table = _learned_fake(frames)
    blob = encode_lossless(data, _layout_of(frames), learned=candidate)
    assert lossless.frame_methods(blob) == ["learned", "learned"]
    assert lossless.learned_streams(blob) == list(table)
    assert decode_lossless(blob, learned=lambda blobs: [table[b] for b in blobs]) == data
    with pytest.raises(lossless.LearnedDecoderRequired):
        decode_lossless(blob)
    wrong = lambda blobs: [table[b] + 1 for b in blobs]
    with pytest.raises(CorruptBlobError, match="CRC"):
        decode_lossless(blob, learned=wrong)


def test_a_learned_stream_that_is_not_exact_is_never_used(make_phantom: Phantom) -> None:
    frames = np.stack([make_phantom(64, 64, "uint16", 12, seed=1)])
    data = frames.astype("<u2").tobytes()
    off = frames.copy()
    off[0, 10, 10] += 1  # one pixel, one level
    blob = encode_lossless(data, _layout_of(frames), learned=lossless.LearnedCandidate([b"tiny"], [off[0]]))
    assert "learned" not in lossless.frame_methods(blob) and decode_lossless(blob) == data
