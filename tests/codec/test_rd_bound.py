"""``max_abs_error``: every pixel within delta by construction (delta = 0 bit-exact), in every mode and size."""

from __future__ import annotations

import numpy as np
import pytest
from codec_helpers import MODELS_DIR, RD_MODEL, TEST_MODEL, phantom

from pacs_cae.codec import CodecError, CorruptBlobError, load_codec, read_header
from pacs_cae.codec.rd.codec import RDCodec
from pacs_cae.train.mr_realism import realistic_slice

DELTAS = (0, 1, 2, 4, 8)


@pytest.fixture(scope="module")
def rd() -> RDCodec:
    codec = load_codec(RD_MODEL, device="cpu", models_dir=MODELS_DIR, mode="channels_last")
    assert isinstance(codec, RDCodec)
    return codec


def _real_mr() -> np.ndarray:
    """A real clinical MR slice (pydicom's MR_small, 64x64 signed 16-bit): a correctness check, not tuning."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    return np.asarray(ds.pixel_array)


def _cases() -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(4)
    noisy = realistic_slice(phantom(96, 130, "uint16", 12, 1).astype(np.float32), rng).astype(np.uint16)
    return [
        (rng.integers(0, 4096, (70, 90)).astype(np.uint16), 12),  # white noise: the hardest residual
        (noisy, 12),
        (_real_mr(), 16),
        (phantom(37, 50, "uint8", 8, 2), 8),
        (phantom(65, 129, "int16", 12, 3), 12),
        (phantom(1, 200, "uint16", 10, 5), 10),
        (phantom(90, 1, "uint16", 12, 7), 12),  # a column: wavefronts with no pixel in them
        (phantom(64, 64, "uint16", 16, 6), 16),
        (np.full((20, 30), -7, np.int16), 16),  # constant
    ]


@pytest.mark.parametrize("delta", DELTAS)
def test_every_pixel_is_within_the_bound(rd: RDCodec, delta: int) -> None:
    cases = _cases()
    blobs = rd.encode([c for c, _ in cases], bits_stored=[b for _, b in cases], max_abs_error=delta)
    for (original, _), blob, out in zip(cases, blobs, rd.decode(blobs)):
        header = read_header(blob)
        assert header.max_abs_error == delta and header.quality == 0
        assert out.shape == original.shape and out.dtype == original.dtype
        error = np.abs(out.astype(np.int64) - original.astype(np.int64))
        assert error.max() <= delta, (original.shape, original.dtype, error.max())
        if delta == 0:
            np.testing.assert_array_equal(out, original)


@pytest.mark.parametrize("delta", (0, 3))
def test_with_and_without_the_learned_layer(rd: RDCodec, delta: int) -> None:
    """The encoder keeps the smaller of both; each kind of blob decodes within the bound on its own."""
    from pacs_cae.codec.normalize import normalize_slice
    from pacs_cae.codec.rd.network import DOWNSCALE

    original = _cases()[1][0]
    item = normalize_slice(original, 12, DOWNSCALE)
    plan = rd.plan(None, delta)
    both = [rd._encode_with(item, original, plan, level) for level in (0, plan.gain_level)]
    assert [read_header(b).gain_level for b in both] == [0, plan.gain_level]
    for blob in both:
        error = np.abs(rd.decode([blob])[0].astype(np.int64) - original)
        assert error.max() <= delta
    assert len(rd.encode([original], bits_stored=12, max_abs_error=delta)[0]) == min(len(b) for b in both)


def test_bound_blobs_decode_identically_in_other_modes(rd: RDCodec) -> None:
    cases = _cases()[:3]
    blobs = rd.encode([c for c, _ in cases], bits_stored=[b for _, b in cases], max_abs_error=[0, 1, 4])
    other = load_codec(RD_MODEL, device="cpu", models_dir=MODELS_DIR, mode="bf16", max_batch=1)
    assert other.encode([c for c, _ in cases], bits_stored=[b for _, b in cases], max_abs_error=[0, 1, 4]) == blobs
    for a, b in zip(rd.decode(blobs), other.decode(blobs)):
        np.testing.assert_array_equal(a, b)


def test_damaged_bound_blobs_are_refused(rd: RDCodec) -> None:
    original = _cases()[1][0]
    blob = rd.encode([original], bits_stored=12, max_abs_error=2)[0]
    for at in range(0, len(blob), max(1, len(blob) // 30)):
        damaged = bytearray(blob)
        damaged[at] ^= 0x04
        with pytest.raises(CorruptBlobError):
            rd.decode([bytes(damaged)])
    with pytest.raises(CorruptBlobError):
        rd.decode([blob[:-5]])


def test_invalid_bounds_and_codecs_without_bounds(rd: RDCodec) -> None:
    slice_ = phantom(32, 32)
    for bad in (-1, 1.5, True, 70000):
        with pytest.raises(CodecError, match="max_abs_error"):
            rd.encode([slice_], max_abs_error=bad)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="not both"):
        rd.encode([slice_], quality=3, max_abs_error=1)
    mixed = rd.encode([slice_, slice_], bits_stored=12, quality=[2, None], max_abs_error=[None, 1])
    assert [read_header(b).quality for b in mixed] == [2, 0]
    assert rd.supports_max_abs_error is True
    cae = load_codec(TEST_MODEL, device="cpu", models_dir=MODELS_DIR)
    assert cae.supports_max_abs_error is False
    with pytest.raises(CodecError, match="max_abs_error"):
        cae.encode([slice_], max_abs_error=0)
    assert read_header(cae.encode([slice_], bits_stored=12)[0]).max_abs_error is None
