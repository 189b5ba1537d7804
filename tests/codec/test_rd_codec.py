"""The rate-distortion codec family (mshp): entropy coding, every quality, bit depths, geometry, exactness."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from codec_helpers import MODELS_DIR, RD_MODEL, TEST_MODEL, phantom

from pacs_cae.codec import CodecError, CorruptBlobError, ModelMismatchError, load_codec, read_header
from pacs_cae.codec.container import RDBlobHeader, unpack_rd_blob
from pacs_cae.codec.metrics import psnr as psnr_db
from pacs_cae.codec.rd.codec import RDCodec
from pacs_cae.codec.rd.coder import TableCoder, new_coder
from pacs_cae.codec.rd.tables import PRECISION, gaussian_tables, quantize_pmf
from pacs_cae.train.mr_realism import realistic_slice


@pytest.fixture(scope="module")
def rd() -> RDCodec:
    codec = load_codec(RD_MODEL, device="cpu", models_dir=MODELS_DIR, mode="fp32")
    assert isinstance(codec, RDCodec)
    return codec


def noisy_mr(rows: int = 256, columns: int = 256, seed: int = 0) -> np.ndarray:
    """A 12-bit phantom made MR-like: Rician noise, bias field, contrast (as the training data)."""
    base = phantom(rows, columns, "uint16", 12, seed).astype(np.float32)
    return realistic_slice(base, np.random.default_rng(seed)).astype(np.uint16)


# ---------------------------------------------------------------- entropy coder
def test_integer_tables_are_exact_distributions() -> None:
    freq = quantize_pmf(np.array([0.5, 0.25, 1e-12, 0.25 - 1e-12, 0.0]))
    assert int(freq.sum()) == 1 << PRECISION and freq.min() >= 1
    tables = gaussian_tables()
    sums = [int(tables.freq[r, : n + 1].sum()) for r, n in enumerate(tables.length)]
    assert set(sums) == {1 << PRECISION}


def test_entropy_coder_round_trips_every_table_and_escapes() -> None:
    coder_tables = TableCoder(gaussian_tables())
    rng = np.random.default_rng(0)
    rows = rng.integers(0, coder_tables.tables.length.size, 20_000)
    values = np.round(rng.normal(0, 1, rows.size) * np.exp(rows / 12.0)).astype(np.int64)
    values[::997] = 10**6  # far outside every table: escape + overflow
    values[5] = -(10**6)
    enc = new_coder()
    overflow = coder_tables.encode(enc, values, rows)
    assert overflow.size >= values[::997].size
    decoded, used = coder_tables.decode(new_coder(enc.get_compressed()), rows, overflow)
    assert used == overflow.size
    np.testing.assert_array_equal(decoded, values)


# ---------------------------------------------------------------- the codec
def test_every_quality_round_trips_with_rising_rate_and_psnr(rd: RDCodec) -> None:
    slice_ = noisy_mr()
    bpp, db = [], []
    for q in range(1, rd.qualities + 1):
        blob = rd.encode([slice_], bits_stored=12, quality=q)[0]
        header = read_header(blob)
        assert isinstance(header, RDBlobHeader) and header.quality == q and header.model_id == RD_MODEL
        assert header.weights_sha256 == rd.weights_sha256
        assert (header.value_min, header.value_max) == (int(slice_.min()), int(slice_.max()))
        out = rd.decode([blob])[0]
        assert out.shape == slice_.shape and out.dtype == slice_.dtype
        bpp.append(8 * len(blob) / slice_.size)
        db.append(psnr_db(slice_, out))
    assert rd.qualities >= 6
    assert all(b2 > b1 for b1, b2 in itertools.pairwise(bpp)), bpp
    assert all(d2 > d1 or d1 == d2 == float("inf") for d1, d2 in itertools.pairwise(db)), db


def test_residual_operating_points_meet_their_target_and_error_bound(rd: RDCodec) -> None:
    """Every quality with a residual layer reaches its PSNR target on each slice and no pixel is off by more
    than the blob's delta; the learned-only points carry no residual."""
    slices = [noisy_mr(160, 224, seed=8), phantom(96, 96, dtype="int16", bits=16, seed=9)]
    targets = [p.residual_db for p in rd.points]
    assert any(t is None for t in targets) and sum(t is not None for t in targets) >= 6
    assert min(t for t in targets if t is not None) <= 45 and max(t for t in targets if t is not None) >= 70
    for q, target in enumerate(targets, start=1):
        for slice_ in slices:
            blob = rd.encode([slice_], bits_stored=16 if slice_.dtype.kind == "i" else 12, quality=q)[0]
            header = read_header(blob)
            assert isinstance(header, RDBlobHeader)
            out = rd.decode([blob])[0]
            if target is None:
                assert header.residual_delta == 0xFFFF
                continue
            error = np.abs(out.astype(np.int64) - slice_.astype(np.int64))
            assert error.max() <= header.residual_delta, (q, error.max(), header.residual_delta)
            assert psnr_db(slice_, out) >= target, (q, psnr_db(slice_, out), target)


def test_default_quality_is_the_cards(rd: RDCodec) -> None:
    slice_ = noisy_mr(128, 128)
    assert rd.encode([slice_], bits_stored=12) == rd.encode([slice_], bits_stored=12, quality=rd.default_quality)


@pytest.mark.parametrize(
    ("dtype", "bits", "shape"),
    [("uint8", 8, (37, 50)), ("uint16", 12, (65, 129)), ("int16", 12, (100, 64)), ("uint16", 16, (64, 64)),
     ("int16", 16, (131, 77)), ("uint16", 10, (1, 200))],
)
def test_bit_depths_signed_unsigned_and_odd_sizes(rd: RDCodec, dtype: str, bits: int, shape: tuple) -> None:
    slice_ = phantom(*shape, dtype=dtype, bits=bits, seed=3)
    blob = rd.encode([slice_], bits_stored=bits, quality=rd.qualities)[0]
    out = rd.decode([blob])[0]
    assert out.shape == slice_.shape and out.dtype == slice_.dtype
    assert out.min() >= slice_.min() and out.max() <= slice_.max()  # the stored value range holds
    if min(shape) >= 32:
        assert psnr_db(slice_, out) > 35.0


def test_constant_and_mixed_batches(rd: RDCodec) -> None:
    flat = np.full((70, 70), 1234, np.uint16)
    mixed = [flat, noisy_mr(64, 96), noisy_mr(200, 130, seed=2), noisy_mr(64, 96, seed=4)]
    blobs = rd.encode(mixed, bits_stored=12, quality=[1, 8, 4, 2])
    assert [read_header(b).quality for b in blobs] == [1, 8, 4, 2]
    out = rd.decode(blobs)
    np.testing.assert_array_equal(out[0], flat)
    for one, blob in zip(mixed, blobs):  # batching does not change the bits
        assert rd.encode([one], bits_stored=12, quality=read_header(blob).quality)[0] == blob


def test_bad_quality_is_a_codec_error(rd: RDCodec) -> None:
    slice_ = noisy_mr(64, 64)
    for bad in (0, rd.qualities + 1, -3):
        with pytest.raises(CodecError, match="quality"):
            rd.encode([slice_], quality=bad)
    cae = load_codec(TEST_MODEL, device="cpu", models_dir=MODELS_DIR)
    assert cae.qualities is None
    with pytest.raises(CodecError, match="single operating point"):
        cae.encode([slice_], quality=3)


def test_damaged_and_foreign_blobs_are_refused(rd: RDCodec) -> None:
    blob = rd.encode([noisy_mr(64, 64)], bits_stored=12, quality=5)[0]
    for at in range(0, len(blob), max(1, len(blob) // 40)):
        damaged = bytearray(blob)
        damaged[at] ^= 0x10
        with pytest.raises(CorruptBlobError):
            rd.decode([bytes(damaged)])
    with pytest.raises(CorruptBlobError):
        rd.decode([blob[:-9]])
    cae = load_codec(TEST_MODEL, device="cpu", models_dir=MODELS_DIR)
    with pytest.raises((ModelMismatchError, CorruptBlobError)):
        cae.decode([blob])
    with pytest.raises(ModelMismatchError):
        rd.decode(cae.encode([phantom(64, 64)], bits_stored=12))


# ---------------------------------------------------------------- exact decoding across modes
@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _encode_in(mode: str, slices: list[np.ndarray], threads: int) -> list[bytes]:
    codec = load_codec(RD_MODEL, device="cpu", models_dir=MODELS_DIR, mode=mode)  # type: ignore[arg-type]
    with torch_threads(threads):
        return codec.encode(slices, bits_stored=12, quality=[1, 4])  # learned only; with residual layer


@pytest.mark.parametrize(("encode_mode", "threads"), [("fp32", 1), ("channels_last", 2), ("bf16", 2)])
def test_blobs_decode_exactly_in_every_mode(encode_mode: str, threads: int) -> None:
    """Encode in one mode and thread count, decode in every mode and thread count: the entropy decoder always
    recovers the bit-identical latent; pixels agree to one stored level (float32 modes) and are reproducible."""
    slices = [noisy_mr(128, 192, seed=5), noisy_mr(192, 128, seed=6)]
    blobs = _encode_in(encode_mode, slices, threads)
    reference = load_codec(RD_MODEL, device="cpu", models_dir=MODELS_DIR, mode="fp64")
    assert isinstance(reference, RDCodec)
    latent = [reference._decode_latent(b)[1] for b in blobs]
    exact = reference.decode(blobs)
    for mode in ("fp32", "channels_last", "bf16"):
        codec = load_codec(RD_MODEL, device="cpu", models_dir=MODELS_DIR, mode=mode)  # type: ignore[arg-type]
        assert isinstance(codec, RDCodec)
        for count in (1, 2):
            with torch_threads(count):
                for blob, want in zip(blobs, latent):
                    assert torch.equal(codec._decode_latent(blob)[1], want), (mode, count)
                decoded = codec.decode(blobs)
                assert all(np.array_equal(a, b) for a, b in zip(decoded, codec.decode(blobs)))  # reproducible
            if mode != "bf16":  # bf16's synthesis is coarser: same latent, visibly different pixels
                for ref, got in zip(exact, decoded):
                    diff = np.abs(ref.astype(np.int64) - got.astype(np.int64))
                    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3, (mode, count)


def test_header_records_model_hash_quality_and_range(rd: RDCodec) -> None:
    slice_ = phantom(50, 70, dtype="int16", bits=12)
    header, words, overflow = unpack_rd_blob(rd.encode([slice_], bits_stored=12, quality=2)[0])
    assert (header.model_id, header.weights_sha256, header.quality) == (RD_MODEL, rd.weights_sha256, 2)
    assert (header.rows, header.columns, header.dtype, header.bits_stored) == (50, 70, "int16", 12)
    assert header.pixel_representation == 1 and header.value_min == int(slice_.min())
    assert header.padded_shape == (64, 128) and words.dtype == np.uint32 and overflow.dtype == np.int32


# ---------------------------------------------------------------- configuration and start-up checks
def test_codec_quality_setting_and_start_up_check(tmp_path, monkeypatch) -> None:
    from pacs_cae.archive.service import ArchiveCodecs
    from pacs_cae.config import CodecSettings, ConfigError, load_settings

    monkeypatch.delenv("PACS_CAE_CODEC_QUALITY", raising=False)
    (tmp_path / "c.toml").write_text("[codec]\nquality = 4\n")
    assert load_settings(tmp_path / "c.toml").codec.quality == 4
    assert load_settings(tmp_path / "c.toml", {"codec.quality": "6"}).codec.quality == 6  # serve --quality 6
    assert load_settings(None).codec.quality is None
    with pytest.raises(ConfigError, match="codec.quality"):
        load_settings(None, {"codec.quality": 0})
    for model, quality, ok in ((RD_MODEL, 3, True), (RD_MODEL, 9, False), (TEST_MODEL, 3, False),
                               (TEST_MODEL, None, True)):
        settings = CodecSettings(model=model, models_dir=str(MODELS_DIR), device="cpu", quality=quality)
        if ok:
            ArchiveCodecs.from_settings(settings).close()
        else:
            with pytest.raises(CodecError, match="codec.quality"):
                ArchiveCodecs.from_settings(settings)
