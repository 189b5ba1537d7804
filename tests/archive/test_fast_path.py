"""The C-STORE fast path (issue 12): pixels kept verbatim when a job follows, re-encoded exactly by the worker.

Real SQLite/PostgreSQL and the real lossless codec: what a modality gets back before, during and after the
worker is byte-for-byte what it sent, and the floors' ``require_gain`` sees the real lossless size.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from pacs_cae.archive.compression_rules import LOSSLESS_JOB
from pacs_cae.archive.repack import repack
from pacs_cae.archive.service import Archive
from pacs_cae.archive.workers import CompressionWorker, FloorAwareEncoders
from pacs_cae.codec.errors import CorruptBlobError
from pacs_cae.codec.lossless import (
    PixelLayout,
    decode_lossless,
    encode_lossless,
    frame_methods,
    is_verbatim,
    store_verbatim,
)
from pacs_cae.codec.weights import ModelCard
from pacs_cae.config import CompressionRule, ConfigError, load_settings
from pacs_cae.store.schema import CompressionJob, Instance, InstanceBlob
from pacs_cae.testing.factories import make_mr_series
from tests.archive.helpers import load_one, reread


def _rows(archive: Archive) -> list[tuple[Instance, bytes]]:
    with archive.database.session(readonly=True) as session:
        return list(session.execute(select(Instance, InstanceBlob.pixel_blob)
                                    .join(InstanceBlob, InstanceBlob.instance_pk == Instance.id)
                                    .order_by(Instance.id)).all())  # type: ignore[arg-type]


def test_verbatim_blob_round_trips_and_is_checked() -> None:
    data = bytes(range(256)) * 5 + b"\x01"
    blob = store_verbatim(data)
    assert is_verbatim(blob) and decode_lossless(blob) == data
    assert not is_verbatim(encode_lossless(data))
    damaged = bytearray(blob)
    damaged[-1] ^= 1
    with pytest.raises(CorruptBlobError, match="damaged"):  # the CRC guards the verbatim bytes too
        decode_lossless(bytes(damaged))


def test_store_keeps_pixels_verbatim_when_a_job_follows_and_repack_encodes_them_exactly(open_archive) -> None:
    archive: Archive = open_archive()
    series = [reread(ds) for ds in make_mr_series(3, 64, 64)]
    outcomes = [archive.store(ds) for ds in series]
    assert all(o.compression_rule == "default" for o in outcomes)
    rows = _rows(archive)
    assert all(is_verbatim(blob) for _, blob in rows)
    for ds in series:  # served exactly as sent while still verbatim
        assert load_one(archive, ds.SOPInstanceUID) == ds

    assert repack(archive.database, [rows[0][0].series_pk]) == 3
    for (inst, blob), ds in zip(_rows(archive), series):
        assert not is_verbatim(blob) and inst.stored_pixel_bytes == len(blob) < len(ds.PixelData)
        assert decode_lossless(blob) == ds.PixelData
        assert load_one(archive, ds.SOPInstanceUID) == ds
    assert repack(archive.database, [rows[0][0].series_pk]) == 0  # idempotent


def _fast_size(ds) -> int:
    """What the repack would have stored: the slice's JPEG-LS blob."""
    return len(encode_lossless(ds.PixelData, PixelLayout(ds.Rows, ds.Columns, ds.BitsAllocated)))


def test_a_series_that_goes_lossy_is_never_repacked_and_saves_from_its_lossless_size(open_archive) -> None:
    """Its lossless coding is only measured (require_gain), never stored; "saved" counts from that size."""
    archive: Archive = open_archive()
    series = [reread(ds) for ds in make_mr_series(3, 64, 64)]
    for ds in series:
        archive.store(ds)
    report = archive.compress_pending()
    assert (report.compressed, report.kept_lossless) == (3, 0)
    rows = _rows(archive)
    assert all(inst.storage == "cae" and inst.stored_pixel_bytes == len(blob) for inst, blob in rows)
    with archive.database.session(readonly=True) as session:
        saved = session.scalar(select(CompressionJob.saved_bytes))
    assert saved == sum(_fast_size(ds) - len(blob) for ds, (_, blob) in zip(series, rows)) > 0


def test_a_series_kept_lossless_gets_its_verified_lossless_coding_with_the_decision(open_archive) -> None:
    archive: Archive = open_archive(gate=True, min_psnr_db=200.0)  # no slice can pass
    series = [reread(ds) for ds in make_mr_series(3, 64, 64)]
    for ds in series:
        archive.store(ds)
    report = archive.compress_pending()
    assert (report.compressed, report.kept_lossless, report.saved_bytes) == (0, 3, 0)
    for (inst, blob), ds in zip(_rows(archive), series):
        assert inst.storage == "lossless" and str(inst.fallback_reason).startswith(("quality-gate", "series-lossless"))
        assert frame_methods(blob) == ["jpeg-ls"] and len(blob) == _fast_size(ds) == inst.stored_pixel_bytes
        assert decode_lossless(blob) == ds.PixelData and load_one(archive, ds.SOPInstanceUID) == ds


def test_a_job_whose_rule_was_removed_gets_its_final_lossless_coding(open_archive) -> None:
    archive: Archive = open_archive()
    series = [reread(ds) for ds in make_mr_series(2, 64, 64)]
    assert all(archive.store(ds).compression_rule == "default" for ds in series)
    archive.settings.compression.rules = [CompressionRule(name="keep", compress=False)]  # "default" is gone
    report = archive.compress_pending()
    assert (report.compressed, report.recoded) == (0, 2)
    for (inst, blob), ds in zip(_rows(archive), series):
        assert inst.storage == "lossless" and not is_verbatim(blob) and decode_lossless(blob) == ds.PixelData


def _jobs(archive: Archive) -> list[tuple[str, str, str | None]]:
    with archive.database.session(readonly=True) as session:
        return [tuple(r) for r in session.execute(  # type: ignore[misc]
            select(CompressionJob.rule, CompressionJob.state, CompressionJob.decision)).all()]


def test_a_series_no_rule_compresses_is_stored_verbatim_and_recoded_by_a_lossless_job(open_archive) -> None:
    """C-STORE never waits for a codec, lossless archive or not; the worker gives the final exact coding."""
    archive: Archive = open_archive()
    archive.settings.compression.rules = [CompressionRule(name="keep", compress=False)]
    series = [reread(ds) for ds in make_mr_series(2, 64, 64)]
    assert all(archive.store(ds).compression_rule is None for ds in series)  # nothing will compress it
    assert all(is_verbatim(blob) for _, blob in _rows(archive))
    assert _jobs(archive) == [(LOSSLESS_JOB, "pending", None)]

    assert archive.compress_pending().recoded == 2
    for (inst, blob), ds in zip(_rows(archive), series):
        assert not is_verbatim(blob) and inst.stored_pixel_bytes == len(blob) < len(ds.PixelData)
        assert set(frame_methods(blob)) <= set(archive.settings.codec.lossless_methods)
        assert inst.storage == "lossless" and inst.fallback_reason is None  # what was asked for: no fallback
        assert load_one(archive, ds.SOPInstanceUID) == ds
    assert _jobs(archive) == [(LOSSLESS_JOB, "done", None)]  # decides nothing for the series
    assert repack(archive.database, [_rows(archive)[0][0].series_pk]) == 0  # nothing verbatim is left


def test_a_slice_the_codec_cannot_take_leaves_its_series_job_to_the_compressing_rule(open_archive) -> None:
    """The rule's run judges the whole series (one slice the codec cannot take keeps it all lossless, with the
    reason recorded); a lossless job must not take the series over and skip that judgement."""
    archive: Archive = open_archive()
    first, second = [reread(ds) for ds in make_mr_series(2, 64, 64)]
    assert archive.store(first).compression_rule == "default"
    archive.settings.codec.min_rows = 100  # the second slice is too small for the codec
    assert archive.store(second).compression_rule is None
    assert _jobs(archive) == [("default", "pending", None)]
    archive.compress_pending()
    assert _jobs(archive) == [("default", "done", "lossless")]
    for inst, blob in _rows(archive):
        assert inst.storage == "lossless" and str(inst.fallback_reason).startswith("series-lossless")
        assert not is_verbatim(blob)


@pytest.mark.parametrize("off", ["compression", "lossless_methods"])
def test_without_a_job_the_pixels_are_encoded_at_once(open_archive, off: str) -> None:
    archive: Archive = open_archive()
    if off == "compression":
        archive.settings.compression.enabled = False
    else:  # nothing to re-code with, and no rule compresses: no job, JPEG-LS at C-STORE
        archive.settings.codec.lossless_methods = []
        archive.settings.compression.rules = [CompressionRule(name="keep", compress=False)]
    ds = reread(make_mr_series(1, 64, 64)[0])
    assert archive.store(ds).compression_rule is None
    [(_, blob)] = _rows(archive)
    assert not is_verbatim(blob) and decode_lossless(blob) == ds.PixelData
    assert _jobs(archive) == []


def test_a_rule_name_in_parentheses_is_refused(tmp_path) -> None:
    config = tmp_path / "pacs-cae.toml"
    config.write_text(f'[[compression.rules]]\nname = "{LOSSLESS_JOB}"\n')
    with pytest.raises(ConfigError, match="reserved"):
        load_settings(config)


def test_worker_skips_a_model_whose_card_cannot_meet_the_psnr_floor(open_archive) -> None:
    """cae-paper's card says ~32 dB; at the 50 dB default floor the worker must not spend CPU on it."""

    archive: Archive = open_archive(gate=True, min_psnr_db=50.0)
    series = [reread(ds) for ds in make_mr_series(2, 64, 64)]
    for ds in series:
        archive.store(ds)

    class Weak:
        model_id, weights_sha256 = "weak", "0" * 64
        card = ModelCard("weak", "cae", "0" * 64, True, extra={"psnr_db": 31.8,
                                                                  "best_val_psnr_db_during_training": 32.2})

        def encode(self, slices, **_):  # type: ignore[no-untyped-def]
            raise AssertionError("a model that cannot meet the floor was run")

        decode = encode

    class Source:
        def encoder_for(self, model: str) -> Weak:
            return Weak()

    report = CompressionWorker(archive.database, archive.settings, Source()).run(
        threading.Event(), drain=True, ignore_delay=True)
    assert (report.compressed, report.kept_lossless, report.failed_jobs) == (0, 2, 0)
    for inst, blob in _rows(archive):
        assert inst.storage == "lossless" and "cannot meet min_psnr_db 50" in (inst.fallback_reason or "")
        assert not is_verbatim(blob)  # still re-encoded exactly
    for ds in series:
        assert load_one(archive, ds.SOPInstanceUID) == ds
    # an unmeasured card (or a floor the card reaches) is not skipped: the floors decide per slice
    archive2: Archive = open_archive(gate=True, min_psnr_db=30.0)
    assert FloorAwareEncoders(Source(), archive2.settings).encoder_for("weak") is not None
