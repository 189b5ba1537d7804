"""The blob container: round trip, and clear errors for truncated, damaged or foreign data."""

from __future__ import annotations

import struct
import zlib

import pytest

from pacs_cae.codec import CorruptBlobError, read_header
from pacs_cae.codec.container import CONTAINER_VERSION, MAGIC, BlobHeader, pack_blob, unpack_blob

HEADER = BlobHeader(
    model_id="cae-paper-init",
    weights_sha256="ab" * 32,
    latent_shape=(512, 16, 16),
    latent_min=-1.5,
    latent_max=2.25,
    rows=484,
    columns=500,
    pad_bottom=28,
    pad_right=12,
    dtype="int16",
    pixel_representation=1,
    bits_stored=12,
    value_min=-2048,
    value_max=2047,
    brotli_quality=5,
)
PAYLOAD = bytes(range(256)) * 3


def test_round_trip_keeps_every_field() -> None:
    blob = pack_blob(HEADER, PAYLOAD)
    header, payload = unpack_blob(blob)
    assert payload == PAYLOAD
    assert header == BlobHeader(**{**vars(HEADER), "payload_length": len(PAYLOAD)})
    assert read_header(blob).padded_shape == (512, 512)
    assert header.container_version == CONTAINER_VERSION and blob.startswith(MAGIC)
    # docs/codec.md: 87 + len(model id) header bytes, the payload, a 4-byte CRC.
    assert len(blob) == 87 + len(HEADER.model_id) + len(PAYLOAD) + 4
    assert blob[87 + len(HEADER.model_id) : -4] == PAYLOAD


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32"])
def test_integer_dtypes_survive(dtype: str) -> None:
    header = BlobHeader(**{**vars(HEADER), "dtype": dtype})
    assert read_header(pack_blob(header, b"x")).dtype == dtype


def test_every_truncation_is_detected() -> None:
    blob = pack_blob(HEADER, PAYLOAD)
    for length in range(len(blob)):
        with pytest.raises(CorruptBlobError):
            unpack_blob(blob[:length])


def test_any_flipped_byte_is_detected() -> None:
    blob = bytearray(pack_blob(HEADER, PAYLOAD))
    for at in range(0, len(blob), 7):
        damaged = bytearray(blob)
        damaged[at] ^= 0x40
        with pytest.raises(CorruptBlobError):
            unpack_blob(bytes(damaged))


def test_appended_bytes_are_detected() -> None:
    with pytest.raises(CorruptBlobError):
        unpack_blob(pack_blob(HEADER, PAYLOAD) + b"\0")


def test_foreign_data_and_future_versions_are_refused() -> None:
    with pytest.raises(CorruptBlobError, match="magic"):
        read_header(b"\x89PNG\r\n\x1a\n" + bytes(200))
    blob = bytearray(pack_blob(HEADER, PAYLOAD))
    struct.pack_into("<H", blob, 4, 9)  # 3 and 4 are the rate-distortion family
    blob[-4:] = struct.pack("<I", zlib.crc32(bytes(blob[:-4])))  # a well-formed blob of an unknown version
    with pytest.raises(CorruptBlobError, match="unsupported container version"):
        read_header(bytes(blob))


def test_invalid_headers_are_refused_when_writing() -> None:
    with pytest.raises(ValueError):
        pack_blob(BlobHeader(**{**vars(HEADER), "model_id": ""}), b"")
    with pytest.raises(ValueError):
        pack_blob(BlobHeader(**{**vars(HEADER), "dtype": "float32"}), b"")


def test_version_1_blobs_stay_readable() -> None:
    """Archives hold blobs of every container version ever written: version 1 (channel-first codes)."""
    import brotli
    import numpy as np

    from pacs_cae.codec import load_codec
    from pacs_cae.codec.container import codes_from_payload

    codec = load_codec("cae-paper-init", device="cpu")
    slice_ = (np.random.default_rng(3).random((64, 96)) * 4095).astype(np.uint16)
    v2 = codec.encode([slice_], bits_stored=12)[0]
    header, payload = unpack_blob(v2)
    codes = codes_from_payload(brotli.decompress(payload), header)  # (C, H, W)
    v1_header = BlobHeader(**{**vars(header), "container_version": 1})
    v1 = pack_blob(v1_header, brotli.compress(np.ascontiguousarray(codes).tobytes()))
    assert read_header(v1).container_version == 1 and read_header(v2).container_version == 2
    np.testing.assert_array_equal(codec.decode([v1])[0], codec.decode([v2])[0])
