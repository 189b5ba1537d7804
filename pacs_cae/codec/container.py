"""The versioned blob container: everything needed to decode one slice, plus a checksum.

Layout (little-endian), container version 2 -- documented in ``docs/codec.md``::

    magic "PCAE" | version u16 | model id length u8 | model id (ASCII)
    weights sha256 (32 raw bytes)
    latent channels, height, width (3 x u16) | latent dtype code u8 (1 = uint8)
    latent min, latent max (2 x float32)                                  -- Eq. 3 parameters
    rows, columns, pad bottom, pad right (4 x u16)                         -- original geometry
    dtype kind u8 ('u' / 'i') | dtype itemsize u8 | pixel representation u8 | bits stored u8
    value min, value max (2 x int64)                                       -- normalisation range
    brotli quality u8 | payload length u32 | payload (Brotli of the uint8 codes; see LATENT_ORDER)
    CRC-32 u32 over every preceding byte

Version 2 differs from version 1 only in the order of the codes in the payload: channels last (height,
width, channel: how Keras, the paper's framework, flattens its 16x16x512 latent), which Brotli compresses
~14 % better than version 1's channel-first order. Every version listed in ``LATENT_ORDER`` stays readable.

Version 3 is the rate-distortion family (``codec.rd``, entropy-coded latents), same prefix::

    magic "PCAE" | version u16 (3) | model id length u8 | model id (ASCII)
    weights sha256 (32 raw bytes) | quality u8 (the operating point, 1 = lowest rate)
    gain level u8 (the network's) | residual delta u16 (0xFFFF: none) | residual block side u8
    y channels, height, width (3 x u16) | z channels, height, width (3 x u16)
    rows, columns, pad bottom, pad right (4 x u16)                         -- original geometry
    dtype kind u8 | dtype itemsize u8 | pixel representation u8 | bits stored u8
    value min, value max (2 x int64)                                       -- normalisation range
    overflow count u32 | stream words u32 | ANS stream (u32 words) | overflow values (int32)
    CRC-32 u32 over every preceding byte

Version 4 is the rate-distortion family with exact pixels and an error bound (``codec.rd``)::

    magic "PCAE" | version u16 (4) | model id length u8 | model id (ASCII)
    weights sha256 (32 raw bytes) | quality u8 (0: chosen by a max_abs_error bound instead)
    gain level u8 | residual delta u16 (0xFFFF: none; else every pixel is within delta of the original)
    residual model u8 (0 none, 1 per-block Gaussian tables, 2 causal context of decoded neighbours,
                       3 the same with the model's learned scale network choosing the contexts)
    residual block side u8 | residual offset i8 (reserved, 0)
    y channels, height, width (3 x u16) | z channels, height, width (3 x u16)
    rows, columns, pad bottom, pad right (4 x u16)
    dtype kind u8 | dtype itemsize u8 | pixel representation u8 | bits stored u8
    value min, value max (2 x int64)
    tie count u32 | overflow count u32 | stream words u32
    ANS stream (u32 words) | overflow values (int32) | tie positions (u32) | tie values (int32)
    CRC-32 u32 over every preceding byte

The ties are the pixels whose float64 reconstruction lies within a hair of a rounding boundary, with the
integer the encoder rounded them to (``codec.rd.exact``): the decoder takes those from the blob and rounds
the rest, so the pixels are the same in every execution mode and on every machine.

A reader refuses any other magic or version, any length mismatch and any checksum mismatch with
:class:`CorruptBlobError`, so damaged data never reaches the decoder. :func:`read_header` reads every version.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import CorruptBlobError

MAGIC = b"PCAE"
CONTAINER_VERSION = 2
#: Order of the uint8 codes in the payload, per container version (``latent_shape`` is always C, H, W).
LATENT_ORDER = {1: "CHW", 2: "HWC"}
LATENT_DTYPES = {1: "uint8"}
_LATENT_CODES = {name: code for code, name in LATENT_DTYPES.items()}

_PREFIX = struct.Struct("<4sHB")
_BODY = struct.Struct("<32s3HBff4HBBBBqqBI")
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class BlobHeader:
    """Everything a blob says about itself; ``read_header`` returns it without decoding pixels."""

    model_id: str
    weights_sha256: str
    latent_shape: tuple[int, int, int]
    latent_min: float
    latent_max: float
    rows: int
    columns: int
    pad_bottom: int
    pad_right: int
    dtype: str
    pixel_representation: int
    bits_stored: int
    value_min: int
    value_max: int
    brotli_quality: int
    latent_dtype: str = "uint8"
    container_version: int = CONTAINER_VERSION
    payload_length: int = 0

    @property
    def padded_shape(self) -> tuple[int, int]:
        """The (rows, columns) the network saw: the original slice plus bottom/right padding."""
        return (self.rows + self.pad_bottom, self.columns + self.pad_right)

    @property
    def max_abs_error(self) -> None:
        """The paper's CAE promises no error bound (see ``RDBlobHeader.max_abs_error``)."""
        return None


def pack_blob(header: BlobHeader, payload: bytes) -> bytes:
    """Serialise ``header`` and ``payload`` into one checksummed blob."""
    model = header.model_id.encode("ascii")
    if not 0 < len(model) < 256:
        raise ValueError(f"model id must be 1..255 ASCII bytes, got {header.model_id!r}")
    dtype = np.dtype(header.dtype)
    if dtype.kind not in "ui":
        raise ValueError(f"pixel dtype must be an integer type, got {dtype}")
    body = _BODY.pack(
        bytes.fromhex(header.weights_sha256),
        *header.latent_shape,
        _LATENT_CODES[header.latent_dtype],
        header.latent_min,
        header.latent_max,
        header.rows,
        header.columns,
        header.pad_bottom,
        header.pad_right,
        ord(dtype.kind),
        dtype.itemsize,
        header.pixel_representation,
        header.bits_stored,
        header.value_min,
        header.value_max,
        header.brotli_quality,
        len(payload),
    )
    if header.container_version not in LATENT_ORDER:
        raise ValueError(f"cannot write container version {header.container_version}")
    data = _PREFIX.pack(MAGIC, header.container_version, len(model)) + model + body + payload
    return data + _CRC.pack(zlib.crc32(data))


def unpack_blob(blob: bytes) -> tuple[BlobHeader, bytes]:
    """Check and parse a blob; return its header and the Brotli payload. Raises CorruptBlobError."""
    view = memoryview(blob)
    version, model_len = _checked_prefix(view)
    if version not in LATENT_ORDER:
        raise CorruptBlobError(
            f"unsupported container version {version} (this build reads versions "
            f"{sorted([*LATENT_ORDER, *RD_CONTAINER_VERSIONS])}; versions 3-4 are the rate-distortion family)"
        )
    body_at = _PREFIX.size + model_len
    payload_at = body_at + _BODY.size
    if len(view) < payload_at + _CRC.size:
        raise CorruptBlobError(f"blob truncated: {len(view)} bytes, header alone needs {payload_at + 4}")
    fields = _BODY.unpack_from(view, body_at)
    (sha, c, h, w, latent_code, zmin, zmax, rows, cols, pad_b, pad_r, kind, itemsize, pixrep, bits,
     vmin, vmax, quality, payload_len) = fields
    if payload_at + payload_len + _CRC.size != len(view):
        raise CorruptBlobError(
            f"blob length {len(view)} does not match its header (payload {payload_len} bytes)"
        )
    try:
        model_id = bytes(view[_PREFIX.size : body_at]).decode("ascii")
        dtype = np.dtype(f"<{chr(kind)}{itemsize}").name
        latent_dtype = LATENT_DTYPES[latent_code]
    except (UnicodeDecodeError, TypeError, KeyError) as exc:
        raise CorruptBlobError(f"blob header has invalid fields: {exc}") from exc
    header = BlobHeader(
        model_id=model_id,
        weights_sha256=sha.hex(),
        latent_shape=(c, h, w),
        latent_min=zmin,
        latent_max=zmax,
        rows=rows,
        columns=cols,
        pad_bottom=pad_b,
        pad_right=pad_r,
        dtype=dtype,
        pixel_representation=pixrep,
        bits_stored=bits,
        value_min=vmin,
        value_max=vmax,
        brotli_quality=quality,
        latent_dtype=latent_dtype,
        container_version=version,
        payload_length=payload_len,
    )
    return header, bytes(view[payload_at : payload_at + payload_len])


RD_CONTAINER_VERSION = 4
#: Rate-distortion container versions this build reads (3: before exact pixels and error bounds).
RD_CONTAINER_VERSIONS = (3, 4)
_RD_BODY = {3: struct.Struct("<32sBBHB3H3H4HBBBBqqII"), 4: struct.Struct("<32sBBHBBb3H3H4HBBBBqqIII")}
NO_RESIDUAL = 0xFFFF
#: ``RDBlobHeader.residual_model`` values.
RESIDUAL_NONE, RESIDUAL_BLOCKS, RESIDUAL_CONTEXT, RESIDUAL_LEARNED = 0, 1, 2, 3


@dataclass(frozen=True)
class RDBlobHeader:
    """The header of a version-3 or -4 (rate-distortion family) blob."""

    model_id: str
    weights_sha256: str
    quality: int  # 0 (version 4): the operating point follows from max_abs_error
    gain_level: int
    residual_delta: int  # 0xFFFF: no residual layer (codec.rd.residual)
    residual_block: int  # side of the blocks that each choose a residual table
    y_shape: tuple[int, int, int]
    z_shape: tuple[int, int, int]
    rows: int
    columns: int
    pad_bottom: int
    pad_right: int
    dtype: str
    pixel_representation: int
    bits_stored: int
    value_min: int
    value_max: int
    container_version: int = RD_CONTAINER_VERSION
    residual_model: int = RESIDUAL_NONE  # version 3: RESIDUAL_BLOCKS whenever residual_delta is set
    residual_offset: int = 0  # reserved (i8, 0)
    ties: int = 0  # pixels whose rounding the blob states (version 4)

    @property
    def padded_shape(self) -> tuple[int, int]:
        return (self.rows + self.pad_bottom, self.columns + self.pad_right)

    @property
    def max_abs_error(self) -> int | None:
        """The guaranteed bound on |original - decoded| of every pixel (0: bit-exact), ``None`` if none.

        Only version-4 blobs guarantee it: their decoded pixels do not depend on the execution mode.
        """
        if self.container_version < 4 or self.residual_delta == NO_RESIDUAL:
            return None
        return self.residual_delta


@dataclass(frozen=True)
class RDPayload:
    """A parsed rate-distortion blob: header, ANS words, escaped values and the stated roundings."""

    header: RDBlobHeader
    words: np.ndarray  # uint32
    overflow: np.ndarray  # int32
    tie_positions: np.ndarray  # int64, flat indices into the (rows, columns) slice
    tie_values: np.ndarray  # int64


def pack_rd_blob(header: RDBlobHeader, words: np.ndarray, overflow: np.ndarray,
                 tie_positions: np.ndarray | None = None, tie_values: np.ndarray | None = None) -> bytes:
    """Serialise a version-4 blob: header, ANS words (uint32), escaped values (int32) and ties, checksummed."""
    model = header.model_id.encode("ascii")
    if not 0 < len(model) < 256:
        raise ValueError(f"model id must be 1..255 ASCII bytes, got {header.model_id!r}")
    dtype = np.dtype(header.dtype)
    if dtype.kind not in "ui":
        raise ValueError(f"pixel dtype must be an integer type, got {dtype}")
    if header.container_version != RD_CONTAINER_VERSION:
        raise ValueError(f"cannot write rate-distortion container version {header.container_version}")
    words = np.ascontiguousarray(words, dtype="<u4")
    overflow = np.ascontiguousarray(overflow, dtype="<i4")
    positions = np.ascontiguousarray(np.zeros(0) if tie_positions is None else tie_positions, dtype="<u4")
    values = np.ascontiguousarray(np.zeros(0) if tie_values is None else tie_values, dtype="<i4")
    if positions.size != values.size:
        raise ValueError("every tie needs a position and a value")
    body = _RD_BODY[4].pack(
        bytes.fromhex(header.weights_sha256), header.quality, header.gain_level, header.residual_delta,
        header.residual_model, header.residual_block, header.residual_offset, *header.y_shape, *header.z_shape,
        header.rows, header.columns, header.pad_bottom, header.pad_right,
        ord(dtype.kind), dtype.itemsize, header.pixel_representation, header.bits_stored,
        header.value_min, header.value_max, positions.size, overflow.size, words.size,
    )
    data = (_PREFIX.pack(MAGIC, RD_CONTAINER_VERSION, len(model)) + model + body + words.tobytes()
            + overflow.tobytes() + positions.tobytes() + values.tobytes())
    return data + _CRC.pack(zlib.crc32(data))


def _checked_prefix(view: memoryview) -> tuple[int, int]:
    """(version, model id length) of a blob whose magic, minimum length and CRC-32 are right."""
    if len(view) < _PREFIX.size + _CRC.size:
        raise CorruptBlobError(f"blob too short ({len(view)} bytes) to be a codec blob")
    magic, version, model_len = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise CorruptBlobError(f"not a codec blob: magic {bytes(magic)!r}, expected {MAGIC!r}")
    (stored_crc,) = _CRC.unpack_from(view, len(view) - _CRC.size)
    if zlib.crc32(view[: len(view) - _CRC.size]) != stored_crc:
        raise CorruptBlobError("blob checksum mismatch: the blob is truncated or damaged")
    return version, model_len


def unpack_rd_blob(blob: bytes) -> RDPayload:
    """Check and parse a version-3 or -4 blob. Raises CorruptBlobError."""
    view = memoryview(blob)
    version, model_len = _checked_prefix(view)
    if version not in RD_CONTAINER_VERSIONS:
        raise CorruptBlobError(f"container version {version} is not a rate-distortion blob "
                               f"(versions {RD_CONTAINER_VERSIONS})")
    body = _RD_BODY[version]
    body_at = _PREFIX.size + model_len
    data_at = body_at + body.size
    if len(view) < data_at + _CRC.size:
        raise CorruptBlobError(f"blob truncated: {len(view)} bytes, header alone needs {data_at + 4}")
    fields = list(body.unpack_from(view, body_at))
    if version == 3:  # no residual model, offset or ties: the model is implied by the delta
        model = RESIDUAL_NONE if fields[3] == NO_RESIDUAL else RESIDUAL_BLOCKS
        fields[4:4] = [model]
        fields[6:6] = [0]
        fields[-2:-2] = [0]
    (sha, quality, gain, delta, residual_model, block, offset, yc, yh, yw, zc, zh, zw, rows, cols, pad_b, pad_r,
     kind, itemsize, pixrep, bits, vmin, vmax, n_ties, n_overflow, n_words) = fields
    if data_at + 4 * (n_words + n_overflow + 2 * n_ties) + _CRC.size != len(view):
        raise CorruptBlobError(f"blob length {len(view)} does not match its header")
    try:
        model_id = bytes(view[_PREFIX.size : body_at]).decode("ascii")
        dtype = np.dtype(f"<{chr(kind)}{itemsize}").name
    except (UnicodeDecodeError, TypeError) as exc:
        raise CorruptBlobError(f"blob header has invalid fields: {exc}") from exc
    header = RDBlobHeader(model_id, sha.hex(), quality, gain, delta, block, (yc, yh, yw), (zc, zh, zw), rows,
                          cols, pad_b, pad_r, dtype, pixrep, bits, vmin, vmax, container_version=version,
                          residual_model=residual_model, residual_offset=offset, ties=n_ties)
    at = data_at
    words = np.frombuffer(view, dtype="<u4", count=n_words, offset=at).astype(np.uint32)
    at += 4 * n_words
    overflow = np.frombuffer(view, dtype="<i4", count=n_overflow, offset=at).astype(np.int32)
    at += 4 * n_overflow
    positions = np.frombuffer(view, dtype="<u4", count=n_ties, offset=at).astype(np.int64)
    values = np.frombuffer(view, dtype="<i4", count=n_ties, offset=at + 4 * n_ties).astype(np.int64)
    return RDPayload(header, words, overflow, positions, values)


def codes_to_payload_order(codes: np.ndarray, version: int = CONTAINER_VERSION) -> np.ndarray:
    """(C, H, W) codes laid out as the payload of ``version`` stores them."""
    return codes.transpose(1, 2, 0) if LATENT_ORDER[version] == "HWC" else codes


def codes_from_payload(raw: bytes, header: BlobHeader) -> np.ndarray:
    """The (C, H, W) codes from a decompressed payload of ``header.container_version``."""
    c, h, w = header.latent_shape
    flat = np.frombuffer(raw, dtype=np.uint8)
    if LATENT_ORDER[header.container_version] == "HWC":
        return flat.reshape(h, w, c).transpose(2, 0, 1)
    return flat.reshape(c, h, w)


def read_header(blob: bytes) -> BlobHeader | RDBlobHeader:
    """The checked header of a blob of any version, without decompressing or decoding anything."""
    if len(blob) >= _PREFIX.size and _PREFIX.unpack_from(blob, 0)[1] in RD_CONTAINER_VERSIONS:
        return unpack_rd_blob(blob).header
    return unpack_blob(blob)[0]
