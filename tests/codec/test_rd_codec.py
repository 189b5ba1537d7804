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


def _codec(mode: str, max_batch: int = 8) -> RDCodec:
    codec = load_codec(RD_MODEL, device="cpu", models_dir=MODELS_DIR, mode=mode,  # type: ignore[arg-type]
                       max_batch=max_batch)
    assert isinstance(codec, RDCodec)
    return codec


#: (encode mode, threads, batch) x (decode mode, threads, batch): every pair differs in something.
_EXECUTIONS = [("fp32", 1, 1), ("channels_last", 2, 4), ("bf16", 2, 4), ("fp64", 1, 4)]


@pytest.mark.parametrize(("encode_with", "decode_with"), list(itertools.permutations(_EXECUTIONS, 2))[::3])
def test_bytes_and_pixels_are_identical_in_every_execution(encode_with: tuple, decode_with: tuple) -> None:
    """Encode in one mode / thread count / batch size, decode in another: the same bytes from every encoder,
    the same pixels from every decoder, and every bound holds exactly."""
    slices = [noisy_mr(128, 192, seed=5), noisy_mr(192, 128, seed=6), noisy_mr(128, 192, seed=7),
              phantom(64, 64, dtype="int16", bits=16, seed=2)]
    quality = [1, 4, None, None]
    bound = [None, None, 0, 2]
    bits = [12, 12, 12, 16]

    def run(execution: tuple, fn: str, data: list) -> list:
        mode, threads, batch = execution
        codec = _codec(mode, batch)
        with torch_threads(threads):
            if fn == "encode":
                return codec.encode(data, bits_stored=bits, quality=quality, max_abs_error=bound)
            return codec.decode(data)

    blobs = run(encode_with, "encode", slices)
    assert blobs == run(decode_with, "encode", slices)
    decoded = run(decode_with, "decode", blobs)
    for got, want in zip(decoded, run(encode_with, "decode", blobs)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(decoded[2], slices[2])
    assert np.abs(decoded[3].astype(np.int64) - slices[3]).max() <= 2


def test_one_slice_and_a_batch_give_the_same_bytes() -> None:
    slices = [noisy_mr(128, 128, seed=s) for s in range(4)]
    batched = _codec("channels_last", 4).encode(slices, bits_stored=12, max_abs_error=1)
    assert batched == [_codec("channels_last", 1).encode([s], bits_stored=12, max_abs_error=1)[0] for s in slices]


def test_version_3_blobs_still_decode() -> None:
    """Blobs stored before container version 4 (pinned files) decode to the pixels they decoded to then."""
    import hashlib
    import json

    data = MODELS_DIR.parent / "tests" / "codec" / "data"
    meta = json.loads((data / "rd_v3.json").read_text())
    original = np.load(data / meta["slice"])
    codec = _codec("fp64")
    for item in meta["blobs"]:
        blob = (data / item["blob"]).read_bytes()
        header = read_header(blob)
        assert isinstance(header, RDBlobHeader) and header.container_version == 3
        assert header.max_abs_error is None  # version 3 promised no bound
        out = codec.decode([blob])[0]
        assert hashlib.sha256(out.tobytes()).hexdigest() == item["decoded_sha256_fp64"]
        assert np.abs(out.astype(np.int64) - original).max() == item["max_abs_error"]


def test_header_records_model_hash_quality_and_range(rd: RDCodec) -> None:
    slice_ = phantom(50, 70, dtype="int16", bits=12)
    payload = unpack_rd_blob(rd.encode([slice_], bits_stored=12, quality=2)[0])
    header, words, overflow = payload.header, payload.words, payload.overflow
    assert (header.model_id, header.weights_sha256, header.quality) == (RD_MODEL, rd.weights_sha256, 2)
    assert (header.rows, header.columns, header.dtype, header.bits_stored) == (50, 70, "int16", 12)
    assert header.pixel_representation == 1 and header.value_min == int(slice_.min())
    assert header.padded_shape == (64, 128) and words.dtype == np.uint32 and overflow.dtype == np.int32
    assert header.container_version == 4 and header.max_abs_error == header.residual_delta  # q2: a residual
    assert read_header(rd.encode([slice_], bits_stored=12, quality=1)[0]).max_abs_error is None  # learned only


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
