"""Issue 11 on the archive side: the worker re-codes what it keeps lossless in the smallest exact coding, and
``max_abs_error`` / per-rule codec settings decide how a rule's series are encoded.

Real codecs (imagecodecs, the shipped untrained CAE), real SQLite and PostgreSQL (the ``database_url``
fixtures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from pacs_cae.archive import compression, retrieve
from pacs_cae.archive.compression import EXACT_REASON, Plan, plan_for, supports_bound
from pacs_cae.archive.received import lossless_layout
from pacs_cae.archive.service import Archive, ArchiveCodecs
from pacs_cae.archive.verify import verify
from pacs_cae.codec import lossless
from pacs_cae.config import (
    LOSSLESS_METHODS,
    CodecSettings,
    CompressionRule,
    ConfigError,
    Settings,
    load_settings,
)
from pacs_cae.store.db import Database
from pacs_cae.store.schema import CodecModel, Instance, InstanceBlob
from pacs_cae.testing.factories import make_mr_series, phantom_slice, set_pixels
from pacs_cae.train.mr_realism import realistic_slice
from tests.archive.helpers import RecordingDecoder, load_one, refs_for, reread


def _noisy_series(n: int = 3, size: int = 96) -> list[Dataset]:
    """Phantom slices with scanner-like Rician noise (so the exact codings differ in size)."""
    rng = np.random.default_rng(7)
    series = make_mr_series(n, size, size, bits_stored=12)
    for i, ds in enumerate(series):
        set_pixels(ds, realistic_slice(phantom_slice(size, size, i, n), rng).astype(np.uint16), bits_stored=12,
                   signed=False)
    return [reread(ds) for ds in series]


def _blobs(archive: Archive) -> dict[str, tuple[bytes, int, str | None, str | None]]:
    with archive.database.session(readonly=True) as session:
        return {uid: (bytes(blob or b""), size, reason, model) for uid, blob, size, reason, model in session.execute(
            select(Instance.sop_instance_uid, InstanceBlob.pixel_blob, Instance.stored_pixel_bytes,
                   Instance.fallback_reason, Instance.codec_model_id)
            .join(InstanceBlob, InstanceBlob.instance_pk == Instance.id))}


def test_slices_kept_lossless_are_recoded_in_their_smallest_exact_coding(open_archive) -> None:
    # no CAE slice passes: all stay lossless; a site that asks for the smallest of every exact coding
    archive: Archive = open_archive(gate=True, min_psnr_db=200.0, lossless_methods=list(lossless.SMALLEST_METHODS))
    series = _noisy_series()
    for ds in series:
        archive.store(ds)
    fast = _blobs(archive)
    # C-STORE: the bytes as received, a job follows; the worker's repack writes JPEG-LS before it judges
    assert {tuple(lossless.frame_methods(b)) for b, *_ in fast.values()} == {("verbatim",)}

    report = archive.compress_pending()
    after = _blobs(archive)
    saved = 0
    for ds in series:
        blob, size, reason, model = after[ds.SOPInstanceUID]
        assert reason and reason.startswith(("quality-gate", "series-lossless"))
        expected = lossless.encode_lossless(ds.PixelData, lossless_layout(ds),
                                            methods=lossless.SMALLEST_METHODS)
        jpeg_ls = len(lossless.encode_lossless(ds.PixelData, lossless_layout(ds)))  # the repacked coding
        assert blob == expected and size == len(blob) < jpeg_ls
        assert model is None  # no learned frame in it
        saved += jpeg_ls - size
        served = load_one(archive, ds.SOPInstanceUID)  # still the original, byte for byte
        assert served.SOPInstanceUID == ds.SOPInstanceUID and served.PixelData == ds.PixelData
        assert "LossyImageCompression" not in served
    assert report.saved_bytes == saved > 0


def test_by_default_slices_kept_lossless_stay_in_jpeg_ls(open_archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default favours retrieve speed: each kept slice is coded once, as JPEG-LS, nothing else is tried."""
    archive: Archive = open_archive(gate=True, min_psnr_db=200.0)
    assert archive.settings.codec.lossless_methods == ["jpeg-ls"]
    series = _noisy_series(2)
    for ds in series:
        archive.store(ds)
    recoded: list[object] = []
    real_encode = compression.encode_lossless
    monkeypatch.setattr(compression, "encode_lossless",
                        lambda *a, **k: recoded.append(k["methods"]) or real_encode(*a, **k))
    archive.compress_pending()
    assert recoded == [("jpeg-ls",)] * len(series)  # C-STORE's verbatim copy, coded once
    for ds in series:
        blob, size, reason, _model = _blobs(archive)[ds.SOPInstanceUID]
        assert reason and reason.startswith(("quality-gate", "series-lossless"))
        assert blob == lossless.encode_lossless(ds.PixelData, lossless_layout(ds)) and size == len(blob)
        assert lossless.frame_methods(blob) == ["jpeg-ls"]


def test_no_lossless_methods_keeps_the_fast_exact_coding(open_archive) -> None:
    archive: Archive = open_archive(gate=True, min_psnr_db=200.0, lossless_methods=[])
    series = _noisy_series(2)
    for ds in series:
        archive.store(ds)
    archive.compress_pending()
    fast = {ds.SOPInstanceUID: lossless.encode_lossless(ds.PixelData, lossless_layout(ds)) for ds in series}
    assert {uid: blob for uid, (blob, *_) in _blobs(archive).items()} == fast  # JPEG-LS, nothing re-coded


class _Codec:
    """Just what ``plan_for`` reads of an encoder: whether it supports a bound, and which bounds."""

    def __init__(self, bounded: bool) -> None:
        self.model_id, self.weights_sha256, self.supports_max_abs_error = "fake", "0" * 64, bounded

    def check_max_abs_error(self, delta: int | None) -> int | None:
        return delta


def _Bounded() -> Any:
    return _Codec(True)


def _Unbounded() -> Any:
    return _Codec(False)


class _Batcher:
    """Passes the bound questions through, as ``BatchingCodec`` does."""

    def __init__(self, codec: _Codec) -> None:
        self.codec = codec
        self.supports_max_abs_error = codec.supports_max_abs_error
        self.check_max_abs_error = codec.check_max_abs_error


def test_plan_takes_the_rules_quality_and_the_tighter_bound_only_for_bounded_models() -> None:
    settings = Settings(codec=CodecSettings(model="mshp-v1", quality=5, max_abs_error=4.0))
    plain = CompressionRule(name="plain")
    assert plan_for(settings, plain, _Bounded()) == Plan("", None, 4)  # the bound chooses the operating point
    assert plan_for(settings, plain, _Unbounded()) == Plan("", 5, None)  # a measured floor (Floors) only
    batched: Any = _Batcher(_Bounded())
    assert supports_bound(batched) and not supports_bound(_Batcher(_Unbounded()))  # type: ignore[arg-type]
    tight = CompressionRule(name="tight", quality=2, max_abs_error=1.5)
    assert plan_for(settings, tight, _Bounded()) == plan_for(settings, tight, batched)
    assert plan_for(settings, tight, _Bounded()).bound == 1 and plan_for(settings, tight, _Unbounded()).quality == 2
    other = CompressionRule(name="other", model="cae-paper")  # codec.quality belongs to codec.model only
    assert plan_for(settings, other, _Unbounded()).quality is None
    loose = CompressionRule(name="loose", max_abs_error=9.0)  # a rule never loosens [codec]
    assert plan_for(settings, loose, _Bounded()).bound == 4
    assert plan_for(Settings(), plain, _Bounded()).bound is None  # unset: no bound asked, today's floors


def test_config_method_names_match_the_codec() -> None:
    assert lossless.STANDARD_METHODS == LOSSLESS_METHODS


def test_rules_carry_quality_and_max_abs_error_and_bad_values_are_refused(tmp_path) -> None:
    config = tmp_path / "rules.toml"
    config.write_text('[codec]\nmax_abs_error = 3\n[[compression.rules]]\nname = "r"\nmodel = "mshp-v1"\n'
                      'quality = 4\nmax_abs_error = 0\n')
    s = load_settings(config, {"codec.lossless_methods": "jpeg-xl,jpeg-ls"})
    assert (s.codec.max_abs_error, s.compression.rules[0].quality, s.compression.rules[0].max_abs_error) == (3, 4, 0)
    assert s.codec.lossless_methods == ["jpeg-xl", "jpeg-ls"]
    for key, value in (("codec.max_abs_error", -1), ("codec.lossless_methods", "png")):
        with pytest.raises(ConfigError, match=key.split(".")[1]):
            load_settings(None, {key: value})
    config.write_text('[[compression.rules]]\nname = "r"\nquality = 0\n')
    with pytest.raises(ConfigError, match="rules.r.quality"):
        load_settings(config)


def test_cli_max_abs_error_sets_the_codec_setting() -> None:
    from pacs_cae.cli.options import flag_overrides

    assert load_settings(None, flag_overrides(max_abs_error=2.0, quality=None)).codec.max_abs_error == 2.0


REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture
def mshp_archive(make_settings, database_url: str):
    """An archive on the shipped ``mshp-v1`` (error bound supported), ``max_abs_error = 0``, learned tier only."""
    settings = make_settings(model="mshp-v1", models_dir=str(REPO_MODELS), max_abs_error=0, lossless_methods=[])
    database = Database(database_url)
    database.upgrade()
    archive = Archive(settings, database, ArchiveCodecs.from_settings(settings.codec))
    yield archive
    archive.close()


def _gradient_series(n: int = 2) -> list[Dataset]:
    """Smooth ramps under Gaussian noise: slices where mshp-v1's exact stream is smaller than JPEG-LS'."""
    rng = np.random.default_rng(3)
    series = make_mr_series(n, 64, 64, bits_stored=12)
    y, x = np.mgrid[0:64, 0:64]
    for ds in series:
        pixels = np.clip(np.round(10 * x + 10 * y + rng.normal(0, 20, (64, 64))), 0, 4095).astype(np.uint16)
        set_pixels(ds, pixels, bits_stored=12, signed=False)
    return [reread(ds) for ds in series]


def test_the_worker_keeps_a_smaller_learned_exact_stream_served_as_the_original(mshp_archive: Archive) -> None:
    archive = mshp_archive
    series = _gradient_series()
    for ds in series:
        archive.store(ds)
    # the fast exact coding (JPEG-LS) the saving is counted from (C-STORE kept the bytes as received)
    fast = {ds.SOPInstanceUID: lossless.encode_lossless(ds.PixelData, lossless_layout(ds)) for ds in series}
    codec = archive.codecs.registry.get("mshp-v1")
    expected = {}
    for ds in series:  # what the worker should arrive at: the learned stream, where it is the smaller
        streams = codec.encode([ds.pixel_array], bits_stored=12, max_abs_error=0)
        expected[ds.SOPInstanceUID] = lossless.encode_lossless(
            ds.PixelData, lossless_layout(ds), methods=(),
            learned=lossless.LearnedCandidate(streams, codec.decode(streams)))
        assert lossless.frame_methods(expected[ds.SOPInstanceUID]) == ["learned"]
        assert len(expected[ds.SOPInstanceUID]) < len(fast[ds.SOPInstanceUID]), "slice no longer exercises this"

    report = archive.compress_pending()  # δ = 0: exact streams, stays lossless, no decision recorded
    assert (report.compressed, report.kept_lossless, report.failed_jobs) == (0, 2, 0)
    assert report.saved_bytes == sum(len(fast[u]) - len(b) for u, b in expected.items())
    for uid, (blob, size, reason, model) in _blobs(archive).items():
        assert blob == expected[uid] and size == len(blob)
        assert reason and reason.startswith(EXACT_REASON) and model == "mshp-v1"  # the model stays referenced
    with archive.database.session(readonly=True) as session:
        assert session.get(CodecModel, "mshp-v1") is not None
        assert {i.storage for i in session.scalars(select(Instance))} == {"lossless"}
    for ds in series:  # the original: same UID, same bytes, nothing lossy declared
        served = load_one(archive, ds.SOPInstanceUID)
        assert served.SOPInstanceUID == ds.SOPInstanceUID and served.PixelData == ds.PixelData
        assert "LossyImageCompression" not in served and list(served.ImageType) == list(ds.ImageType)
    result = verify(archive)
    assert result.ok and result.checked["lossless"] == 2, result.failures


def _exact_series_stored(archive: Archive, n: int) -> list[Dataset]:
    series = _gradient_series(n)
    for ds in series:
        archive.store(ds)
    assert archive.compress_pending().kept_lossless == n
    assert all(lossless.frame_methods(blob) == ["learned"] for blob, *_ in _blobs(archive).values())
    return series


def test_a_retrieve_decodes_the_learned_exact_frames_of_a_chunk_in_one_codec_call(mshp_archive: Archive) -> None:
    archive = mshp_archive
    series = _exact_series_stored(archive, 3)
    refs = refs_for(archive, *[ds.SOPInstanceUID for ds in series])
    decoder = RecordingDecoder(archive.codecs)
    out = list(retrieve.load(refs, database=archive.database, decoder=decoder, chunk_size=8))
    assert [n for _, n in decoder.calls] == [3]  # one call for the chunk, not one per instance
    assert [served.PixelData for _, served in out] == [ds.PixelData for ds in series]
    assert [served.SOPInstanceUID for _, served in out] == [ds.SOPInstanceUID for ds in series]


def test_a_damaged_learned_exact_stream_fails_only_its_instance(mshp_archive: Archive) -> None:
    archive = mshp_archive
    series = _exact_series_stored(archive, 3)
    refs = refs_for(archive, *[ds.SOPInstanceUID for ds in series])
    with archive.database.session() as session:
        row = session.get(InstanceBlob, refs[1].id)
        blob = bytearray(row.pixel_blob)
        blob[-40:-20] = bytes(20)  # inside its learned stream: the container still parses
        row.pixel_blob = bytes(blob)
    decoder = RecordingDecoder(archive.codecs)
    out = list(retrieve.load(refs, database=archive.database, decoder=decoder, chunk_size=8))
    assert [isinstance(ds, Exception) for _, ds in out] == [False, True, False]
    assert [out[0][1].PixelData, out[2][1].PixelData] == [series[0].PixelData, series[2].PixelData]


def test_a_rule_quality_its_model_cannot_honour_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pacs_cae.cli import app

    config = tmp_path / "bad-rule.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[codec]\nmodel = "mshp-v1"\ndevice = "cpu"\n'
                      f'models_dir = "{REPO_MODELS}"\n[[compression.rules]]\nname = "r"\nquality = 99\n')
    result = CliRunner().invoke(app, ["worker", "--drain", "--config", str(config)])
    assert result.exit_code == 2, result.output  # the worker's code for a model it cannot use
    assert "compression.rules.r.quality = 99, but model 'mshp-v1' has qualities 1.." in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
