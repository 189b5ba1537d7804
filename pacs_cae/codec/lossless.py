"""Byte-exact storage for pixel data: the received bytes come back exactly, in the smallest exact coding tried.

Native monochrome 8/16-bit frames are coded per frame by each requested method - JPEG-LS (CharLS), JPEG 2000
(OpenJPEG, reversible 5/3 wavelet), JPEG-XL (libjxl, modular lossless), and optionally the learned codec at
``max_abs_error = 0`` (streams the caller encoded; see :class:`LearnedCandidate`) - every stream is decoded
again and compared with the frame at encode time, and the smallest verified one is kept. Anything else, or a
frame no method codes exactly, goes through Brotli as one byte string. Signed pixels are mapped to unsigned by
flipping the sign bit (order-preserving, so prediction still works, and exactly reversible). Bytes past the
last whole frame (DICOM's even-length pad) are kept verbatim. The original's length and CRC-32 are checked on
every decode, so a stream that decodes to other bytes is an error, never a pixel.

Which methods to try is the caller's choice: C-STORE uses :data:`FAST_METHODS` (JPEG-LS: milliseconds per
slice); the compression worker later re-codes the copies it keeps lossless with :data:`SMALLEST_METHODS`
(docs/configuration.md, "Lossless storage", has the measured sizes and times).

Blob layout (little-endian)::

    magic "PCLL" | version u8 | container u8 | flags u8 (bit 0: sign bit flipped)
    itemsize u8 | rows u32 | columns u32 | frames u32 | original length u64 | CRC-32 of the original bytes u32
    container 0 (verbatim): the original bytes (C-STORE's fast path, :func:`store_verbatim`; a worker
                            re-encodes them)
    container 1 (Brotli): payload
    version 1, container 2 (JPEG-LS): frames x (stream length u32) | streams | trailing bytes
    version 2, container 2 (per frame): frames x (method u8, stream length u32) | streams | trailing bytes

Version 1 blobs (JPEG-LS or Brotli only) are still read; new blobs are version 2.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import brotli
import numpy as np

from .errors import CodecError, CorruptBlobError

try:  # imagecodecs is a dependency, but each codec is an optional build component.
    import imagecodecs

    _AVAILABLE = {
        "jpeg-ls": bool(imagecodecs.JPEGLS.available),
        "jpeg-2000": bool(imagecodecs.JPEG2K.available),
        "jpeg-xl": bool(imagecodecs.JPEGXL.available),
    }
except ImportError:  # pragma: no cover - depends on the installed wheel
    imagecodecs = None  # type: ignore[assignment]
    _AVAILABLE = {"jpeg-ls": False, "jpeg-2000": False, "jpeg-xl": False}
_HAVE_JPEGLS = _AVAILABLE["jpeg-ls"]

LOG = logging.getLogger(__name__)

MAGIC = b"PCLL"
VERSION = 2
READABLE_VERSIONS = (1, 2)
CONTAINER_VERBATIM = 0
CONTAINER_BROTLI = 1
CONTAINER_FRAMES = 2
#: Per-frame methods (version 2); version 1's container 2 is JPEG-LS for every frame.
METHOD_JPEGLS = 2
METHOD_JPEG2000 = 3
METHOD_JPEGXL = 4
METHOD_LEARNED = 5
METHOD_NAMES = {METHOD_JPEGLS: "jpeg-ls", METHOD_JPEG2000: "jpeg-2000", METHOD_JPEGXL: "jpeg-xl",
                METHOD_LEARNED: "learned"}
_BY_NAME = {name: method for method, name in METHOD_NAMES.items()}
#: The standard methods a configuration may name (``learned`` needs a model, see :class:`LearnedCandidate`).
STANDARD_METHODS = ("jpeg-ls", "jpeg-2000", "jpeg-xl")
#: C-STORE's fast path: JPEG-LS codes a 512x512 slice in milliseconds.
FAST_METHODS: tuple[str, ...] = ("jpeg-ls",)
#: The worker's re-coding: every standard method, the smallest verified stream wins.
SMALLEST_METHODS: tuple[str, ...] = STANDARD_METHODS
#: JPEG-XL effort (1-9): 7 is libjxl's default; 9 saves ~1 % more for ~2x the time (measured, see docs).
JPEGXL_EFFORT = 7

_FLAG_SIGNED = 1
_HEADER = struct.Struct("<4sBBBBIIIQI")
_LENGTH = struct.Struct("<I")
_FRAME = struct.Struct("<BI")

#: Decodes learned-codec blobs (``max_abs_error = 0``) into slices of their original dtype, in order.
LearnedDecoder = Callable[[Sequence[bytes]], Sequence[np.ndarray]]


class LearnedDecoderRequired(CodecError):
    """The blob holds learned-codec frames and no decoder for them was given."""


@dataclass(frozen=True)
class PixelLayout:
    """How raw native (little-endian) Pixel Data bytes are laid out; enough to see frames in them."""

    rows: int
    columns: int
    bits_allocated: int
    pixel_representation: int = 0
    samples_per_pixel: int = 1
    frames: int = 1


@dataclass(frozen=True)
class LearnedCandidate:
    """Learned-codec streams (``max_abs_error = 0``), one per frame, and what decoding them gave.

    ``encode_lossless`` uses a stream only when its decoded slice gives back the frame's exact bytes, and only
    where it is the smallest; ``decoded`` must come from actually decoding ``streams`` (not from the encoder's
    own reconstruction), so the check proves what a retrieve will get.
    """

    streams: Sequence[bytes]
    decoded: Sequence[np.ndarray]


def _frames_view(data: bytes, layout: PixelLayout | None) -> tuple[np.ndarray, int] | None:
    """(frames, itemsize) as an unsigned (F, rows, cols) array if frame codecs can take this data, else None."""
    if layout is None or layout.samples_per_pixel != 1:
        return None
    if layout.bits_allocated not in (8, 16) or min(layout.rows, layout.columns, layout.frames) < 1:
        return None
    itemsize = layout.bits_allocated // 8
    size = layout.rows * layout.columns * layout.frames * itemsize
    if size > len(data):
        return None
    frames = np.frombuffer(data, dtype=f"<u{itemsize}", count=size // itemsize)
    frames = frames.reshape(layout.frames, layout.rows, layout.columns)
    return _flip(frames, bool(layout.pixel_representation)), itemsize


def _flip(frame: np.ndarray, signed: bool) -> np.ndarray:
    """Signed <-> unsigned by the sign bit (its own inverse); unsigned frames pass unchanged."""
    return frame ^ np.array(1 << (8 * frame.dtype.itemsize - 1), dtype=frame.dtype) if signed else frame


def _as_stored(pixels: np.ndarray, itemsize: int, signed: bool) -> np.ndarray:
    """A decoded learned slice (original dtype) as the unsigned, sign-flipped frame the blob compares with."""
    return _flip(np.asarray(pixels).astype(f"<{'i' if signed else 'u'}{itemsize}").view(f"<u{itemsize}"), signed)


def _encode(method: int, frame: np.ndarray) -> bytes:
    if method == METHOD_JPEGLS:
        return bytes(imagecodecs.jpegls_encode(frame))
    if method == METHOD_JPEG2000:
        return bytes(imagecodecs.jpeg2k_encode(frame, level=0, codecformat="j2k", reversible=True, numthreads=1))
    if method == METHOD_JPEGXL:
        return bytes(imagecodecs.jpegxl_encode(frame, lossless=True, effort=JPEGXL_EFFORT, numthreads=1))
    raise ValueError(f"no encoder for lossless method {method}")


def _decode(method: int, stream: bytes) -> np.ndarray:
    if method == METHOD_JPEGLS:
        return np.asarray(imagecodecs.jpegls_decode(stream))
    if method == METHOD_JPEG2000:
        return np.asarray(imagecodecs.jpeg2k_decode(stream, numthreads=1))
    if method == METHOD_JPEGXL:
        return np.asarray(imagecodecs.jpegxl_decode(stream, numthreads=1))
    raise CorruptBlobError(f"unknown lossless method {method}")


def _smallest_exact(frame: np.ndarray, methods: Sequence[int], *, verify: bool = True) -> tuple[int, bytes] | None:
    """The smallest stream among ``methods`` that decodes to exactly ``frame`` (None: none does); unchecked
    with ``verify=False`` (only for :func:`lossless_size`)."""
    best: tuple[int, bytes] | None = None
    for method in methods:
        try:
            stream = _encode(method, frame)
            if best is not None and len(stream) >= len(best[1]):
                continue
            exact = not verify or np.array_equal(_decode(method, stream), frame)
        except Exception as exc:  # noqa: BLE001 - any codec failure means: not this method
            LOG.debug("lossless %s cannot code a %s %s frame: %s", METHOD_NAMES[method], frame.shape,
                      frame.dtype, exc)
            exact = False
        if exact:
            best = (method, stream)
    return best


def method_ids(methods: Sequence[str]) -> list[int]:
    """The available standard methods among ``methods`` (names as in :data:`STANDARD_METHODS`)."""
    unknown = [m for m in methods if m not in STANDARD_METHODS]
    if unknown:
        raise ValueError(f"unknown lossless method(s) {unknown}; choose from {STANDARD_METHODS}")
    return [_BY_NAME[m] for m in methods if _AVAILABLE[m]]


def encode_lossless(data: bytes, layout: PixelLayout | None = None, *, brotli_quality: int = 5,
                    methods: Sequence[str] = FAST_METHODS, learned: LearnedCandidate | None = None) -> bytes:
    """Compress ``data`` losslessly, per frame in the smallest verified coding; ``decode_lossless`` returns
    exactly these bytes."""
    return _encode_blob(bytes(data), layout, brotli_quality, methods, learned, verify=True)


def lossless_size(data: bytes, layout: PixelLayout | None = None, *, brotli_quality: int = 5,
                  methods: Sequence[str] = FAST_METHODS) -> int:
    """The length :func:`encode_lossless` gives, without its verifying decode (about half its time).

    Why: the compression worker's ``require_gain`` floor compares a lossy blob with the lossless size of a slice
    C-STORE wrote verbatim; when the slice goes lossy its lossless coding is never stored, so it need not be
    checked. A comparison figure only: a blob that is stored always comes from :func:`encode_lossless`.
    """
    return len(_encode_blob(bytes(data), layout, brotli_quality, methods, None, verify=False))


def _encode_blob(data: bytes, layout: PixelLayout | None, brotli_quality: int, methods: Sequence[str],
                 learned: LearnedCandidate | None, *, verify: bool) -> bytes:
    crc = zlib.crc32(data)
    view = _frames_view(data, layout)
    if view is not None and layout is not None:
        frames, itemsize = view
        ids = method_ids(methods)
        chosen: list[tuple[int, bytes]] = []
        for i, frame in enumerate(frames):
            best = _smallest_exact(np.ascontiguousarray(frame), ids, verify=verify)
            if learned is not None and i < len(learned.streams):
                stream = bytes(learned.streams[i])
                if (best is None or len(stream) < len(best[1])) and np.array_equal(
                        _as_stored(learned.decoded[i], itemsize, bool(layout.pixel_representation)), frame):
                    best = (METHOD_LEARNED, stream)
            if best is None:
                break
            chosen.append(best)
        if len(chosen) == len(frames):
            flags = _FLAG_SIGNED if layout.pixel_representation else 0
            tail = data[frames.size * itemsize :]
            header = _HEADER.pack(MAGIC, VERSION, CONTAINER_FRAMES, flags, itemsize, layout.rows, layout.columns,
                                  layout.frames, len(data), crc)
            table = b"".join(_FRAME.pack(method, len(stream)) for method, stream in chosen)
            blob = header + table + b"".join(stream for _, stream in chosen) + tail
            if len(blob) < len(data):
                return blob
    header = _HEADER.pack(MAGIC, VERSION, CONTAINER_BROTLI, 0, 1, 0, 0, 0, len(data), crc)
    return header + brotli.compress(data, quality=brotli_quality)


def store_verbatim(data: bytes) -> bytes:
    """``data`` unchanged behind the blob header (CRC-32 checked): what C-STORE writes without waiting for a codec.

    Costs a CRC and one copy; a compression worker later replaces it by :func:`encode_lossless` or a lossy blob.
    """
    header = _HEADER.pack(MAGIC, VERSION, CONTAINER_VERBATIM, 0, 1, 0, 0, 0, len(data), zlib.crc32(data))
    return header + bytes(data)


def is_verbatim(blob: bytes) -> bool:
    """Whether ``blob`` is a :func:`store_verbatim` blob (still to be encoded by a worker)."""
    return len(blob) >= _HEADER.size and blob[:4] == MAGIC and blob[5] == CONTAINER_VERBATIM


def _parse(blob: bytes) -> tuple[memoryview, tuple]:
    view = memoryview(blob)
    if len(view) < _HEADER.size:
        raise CorruptBlobError(f"lossless blob too short ({len(view)} bytes)")
    fields = _HEADER.unpack_from(view)
    if fields[0] != MAGIC:
        raise CorruptBlobError(f"not a lossless blob: magic {bytes(fields[0])!r}")
    if fields[1] not in READABLE_VERSIONS:
        raise CorruptBlobError(f"unsupported lossless blob version {fields[1]} (this build reads "
                               f"{', '.join(map(str, READABLE_VERSIONS))})")
    return view, fields


def _frame_table(view: memoryview, version: int, nframes: int) -> tuple[list[tuple[int, int]], int]:
    """[(method, stream length)] per frame and the offset of the first stream."""
    at = _HEADER.size
    if version == 1:
        if len(view) < at + _LENGTH.size * nframes:
            raise CorruptBlobError("lossless blob is damaged: truncated frame table")
        return [(METHOD_JPEGLS, _LENGTH.unpack_from(view, at + 4 * i)[0]) for i in range(nframes)], \
            at + _LENGTH.size * nframes
    if len(view) < at + _FRAME.size * nframes:
        raise CorruptBlobError("lossless blob is damaged: truncated frame table")
    return [_FRAME.unpack_from(view, at + _FRAME.size * i) for i in range(nframes)], at + _FRAME.size * nframes


def frame_methods(blob: bytes) -> list[str]:
    """The coding of each frame (``["brotli"]`` for a Brotli blob): what ``stats`` and benchmarks report."""
    view, (_, version, container, _, _, _, _, nframes, _, _) = _parse(blob)
    if container == CONTAINER_VERBATIM:
        return ["verbatim"]
    if container == CONTAINER_BROTLI:
        return ["brotli"]
    return [METHOD_NAMES.get(m, f"unknown-{m}") for m, _ in _frame_table(view, version, nframes)[0]]


def learned_streams(blob: bytes) -> list[bytes]:
    """The learned-codec streams inside a lossless blob, in frame order (empty for most blobs)."""
    view, (_, version, container, _, _, _, _, nframes, _, _) = _parse(blob)
    if container != CONTAINER_FRAMES:
        return []
    table, at = _frame_table(view, version, nframes)
    out = []
    for method, size in table:
        if method == METHOD_LEARNED:
            out.append(bytes(view[at : at + size]))
        at += size
    return out


def decode_lossless(blob: bytes, learned: LearnedDecoder | None = None) -> bytes:
    """The exact original bytes; raises ``CorruptBlobError`` on any damage (checked by CRC-32).

    ``learned`` decodes learned-codec frames (only blobs the worker re-coded with a ``max_abs_error = 0``
    model hold them); without it such a blob raises :class:`LearnedDecoderRequired`.
    """
    view, (_, version, container, flags, itemsize, rows, cols, nframes, length, crc) = _parse(blob)
    try:
        if container == CONTAINER_VERBATIM:
            data = bytes(view[_HEADER.size :])
        elif container == CONTAINER_BROTLI:
            data = brotli.decompress(bytes(view[_HEADER.size :]))
        elif container == CONTAINER_FRAMES:
            data = _decode_frames(view, version, flags, itemsize, rows, cols, nframes, learned)
        else:
            raise CorruptBlobError(f"unknown lossless container {container}")
    except CodecError:
        raise
    except Exception as exc:
        raise CorruptBlobError(f"lossless blob is damaged: {exc}") from exc
    if len(data) != length or zlib.crc32(data) != crc:
        raise CorruptBlobError("lossless blob is damaged: decoded bytes fail the length/CRC check")
    return data


def _decode_frames(view: memoryview, version: int, flags: int, itemsize: int, rows: int, cols: int,
                   nframes: int, learned: LearnedDecoder | None) -> bytes:
    if itemsize not in (1, 2):
        raise CorruptBlobError(f"lossless blob header names {itemsize}-byte pixels")
    table, at = _frame_table(view, version, nframes)
    signed = bool(flags & _FLAG_SIGNED)
    streams = []
    for method, size in table:
        if method not in METHOD_NAMES:
            raise CorruptBlobError(f"unknown lossless method {method}")
        if method != METHOD_LEARNED and (imagecodecs is None or not _AVAILABLE[METHOD_NAMES[method]]):
            raise CorruptBlobError(f"this blob needs {METHOD_NAMES[method]}, which this imagecodecs build lacks")
        streams.append((method, bytes(view[at : at + size])))
        at += size
    learned_blobs = [s for m, s in streams if m == METHOD_LEARNED]
    if learned_blobs and learned is None:
        raise LearnedDecoderRequired("this lossless blob holds learned-codec frames; decoding needs the codec")
    learned_frames = iter(learned(learned_blobs) if learned_blobs and learned is not None else [])
    frames = []
    for method, stream in streams:
        if method == METHOD_LEARNED:
            frame = _as_stored(next(learned_frames), itemsize, signed)
        else:
            frame = _decode(method, stream)
            if frame.dtype.kind != "u" or frame.dtype.itemsize > itemsize:
                raise CorruptBlobError(f"{METHOD_NAMES[method]} frame {frame.dtype} does not match the header")
            frame = frame.astype(f"<u{itemsize}")
        if frame.shape != (rows, cols):
            raise CorruptBlobError(f"{METHOD_NAMES[method]} frame {frame.shape} does not match the header")
        frames.append(frame)
    pixels = _flip(np.stack(frames), signed) if frames else np.empty((0,), dtype=f"<u{itemsize}")
    return pixels.tobytes() + bytes(view[at:])
