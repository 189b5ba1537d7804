"""Byte-exact storage for pixel data the CAE does not take (colour, odd bit depths, policy rejects, ...).

Native monochrome 8/16-bit frames go through JPEG-LS (imagecodecs/CharLS: fast, standard, typically 2-3x on
MR); everything else, or anything whose JPEG-LS round trip is not verified bit-exact at encode time, goes
through Brotli. Signed pixels are mapped to unsigned by flipping the sign bit (order-preserving, so JPEG-LS
prediction still works, and exactly reversible). Bytes past the last whole frame (DICOM's even-length pad)
are kept verbatim.

Blob layout (little-endian)::

    magic "PCLL" | version u8 (1) | method u8 (0 = verbatim, 1 = Brotli, 2 = JPEG-LS) | flags u8 (bit 0: sign bit flipped)
    itemsize u8 | rows u32 | columns u32 | frames u32 | original length u64 | CRC-32 of the original bytes u32
    Brotli:  payload
    JPEG-LS: frames x (stream length u32) | streams | trailing bytes (original length - frame bytes)
    verbatim: the original bytes (the C-STORE fast path, :func:`store_verbatim`; a worker re-encodes them)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import brotli
import numpy as np

from .errors import CorruptBlobError

try:  # imagecodecs is a dependency, but its JPEG-LS codec is an optional build component.
    import imagecodecs

    _HAVE_JPEGLS = bool(imagecodecs.JPEGLS.available)
except Exception:  # pragma: no cover - depends on the installed wheel
    imagecodecs = None
    _HAVE_JPEGLS = False

MAGIC = b"PCLL"
VERSION = 1
METHOD_VERBATIM = 0
METHOD_BROTLI = 1
METHOD_JPEGLS = 2
_FLAG_SIGNED = 1
_HEADER = struct.Struct("<4sBBBBIIIQI")
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class PixelLayout:
    """How raw native (little-endian) Pixel Data bytes are laid out; enough to see frames in them."""

    rows: int
    columns: int
    bits_allocated: int
    pixel_representation: int = 0
    samples_per_pixel: int = 1
    frames: int = 1


def _frames_view(data: bytes, layout: PixelLayout | None) -> tuple[np.ndarray, int] | None:
    """(frames, itemsize) as an unsigned (F, rows, cols) array if JPEG-LS can take this data, else None."""
    if layout is None or not _HAVE_JPEGLS or layout.samples_per_pixel != 1:
        return None
    if layout.bits_allocated not in (8, 16) or min(layout.rows, layout.columns, layout.frames) < 1:
        return None
    itemsize = layout.bits_allocated // 8
    size = layout.rows * layout.columns * layout.frames * itemsize
    if size > len(data):
        return None
    frames = np.frombuffer(data, dtype=f"<u{itemsize}", count=size // itemsize)
    frames = frames.reshape(layout.frames, layout.rows, layout.columns)
    if layout.pixel_representation:
        frames = frames ^ np.array(1 << (8 * itemsize - 1), dtype=frames.dtype)
    return frames, itemsize


def encode_lossless(data: bytes, layout: PixelLayout | None = None, *, brotli_quality: int = 5) -> bytes:
    """Compress ``data`` losslessly; ``decode_lossless`` returns exactly these bytes."""
    data = bytes(data)
    crc = zlib.crc32(data)
    view = _frames_view(data, layout)
    if view is not None and layout is not None:
        frames, itemsize = view
        try:
            streams = [bytes(imagecodecs.jpegls_encode(np.ascontiguousarray(f))) for f in frames]
            exact = all(np.array_equal(imagecodecs.jpegls_decode(s), f) for s, f in zip(streams, frames))
        except Exception:  # noqa: BLE001 - any codec failure means: use Brotli
            exact = False
        if exact:
            flags = _FLAG_SIGNED if layout.pixel_representation else 0
            tail = data[frames.size * itemsize :]
            header = _HEADER.pack(
                MAGIC, VERSION, METHOD_JPEGLS, flags, itemsize, layout.rows, layout.columns, layout.frames,
                len(data), crc,
            )
            lengths = b"".join(_LENGTH.pack(len(s)) for s in streams)
            blob = header + lengths + b"".join(streams) + tail
            if len(blob) < len(data):
                return blob
    header = _HEADER.pack(MAGIC, VERSION, METHOD_BROTLI, 0, 1, 0, 0, 0, len(data), crc)
    return header + brotli.compress(data, quality=brotli_quality)


def store_verbatim(data: bytes) -> bytes:
    """``data`` unchanged behind the blob header (CRC-32 checked): what C-STORE writes without waiting for a codec.

    Costs a CRC and one copy; a compression worker later replaces it by :func:`encode_lossless` or a lossy blob.
    """
    header = _HEADER.pack(MAGIC, VERSION, METHOD_VERBATIM, 0, 1, 0, 0, 0, len(data), zlib.crc32(data))
    return header + bytes(data)


def is_verbatim(blob: bytes) -> bool:
    """Whether ``blob`` is a :func:`store_verbatim` blob (still to be encoded by a worker)."""
    return len(blob) >= _HEADER.size and blob[:4] == MAGIC and blob[5] == METHOD_VERBATIM


def decode_lossless(blob: bytes) -> bytes:
    """The exact original bytes; raises ``CorruptBlobError`` on any damage (checked by CRC-32)."""
    view = memoryview(blob)
    if len(view) < _HEADER.size:
        raise CorruptBlobError(f"lossless blob too short ({len(view)} bytes)")
    magic, version, method, flags, itemsize, rows, cols, nframes, length, crc = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise CorruptBlobError(f"not a lossless blob: magic {bytes(magic)!r}")
    if version != VERSION:
        raise CorruptBlobError(f"unsupported lossless blob version {version} (this build reads {VERSION})")
    try:
        if method == METHOD_VERBATIM:
            data = bytes(view[_HEADER.size :])
        elif method == METHOD_BROTLI:
            data = brotli.decompress(bytes(view[_HEADER.size :]))
        elif method == METHOD_JPEGLS:
            data = _decode_jpegls(view, flags, itemsize, rows, cols, nframes, length)
        else:
            raise CorruptBlobError(f"unknown lossless method {method}")
    except CorruptBlobError:
        raise
    except Exception as exc:  # noqa: BLE001 - Brotli/CharLS errors on damaged input
        raise CorruptBlobError(f"lossless blob is damaged: {exc}") from exc
    if len(data) != length or zlib.crc32(data) != crc:
        raise CorruptBlobError("lossless blob is damaged: decoded bytes fail the length/CRC check")
    return data


def _decode_jpegls(
    view: memoryview, flags: int, itemsize: int, rows: int, cols: int, nframes: int, length: int
) -> bytes:
    if imagecodecs is None or not _HAVE_JPEGLS:
        raise CorruptBlobError("this blob needs JPEG-LS, which this imagecodecs build lacks")
    at = _HEADER.size
    lengths = [_LENGTH.unpack_from(view, at + 4 * i)[0] for i in range(nframes)]
    at += 4 * nframes
    frames = []
    for size in lengths:
        frame = np.asarray(imagecodecs.jpegls_decode(bytes(view[at : at + size])))
        if frame.shape != (rows, cols) or frame.dtype.kind != "u" or frame.dtype.itemsize > itemsize:
            raise CorruptBlobError(f"JPEG-LS frame {frame.shape}/{frame.dtype} does not match the header")
        frames.append(frame.astype(f"<u{itemsize}"))
        at += size
    pixels = np.stack(frames)
    if flags & _FLAG_SIGNED:
        pixels = pixels ^ np.array(1 << (8 * itemsize - 1), dtype=pixels.dtype)
    return pixels.tobytes() + bytes(view[at:])
