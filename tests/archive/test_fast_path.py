"""The C-STORE fast path (issue 12): pixels kept verbatim when a job follows, re-encoded exactly by the worker.

Real SQLite/PostgreSQL and the real lossless codec: what a modality gets back before, during and after the
repack is byte-for-byte what it sent, and the floors' ``require_gain`` sees the real lossless size.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from pacs_cae.archive.repack import repack
from pacs_cae.archive.service import Archive
from pacs_cae.archive.workers import CompressionWorker, FloorAwareEncoders
from pacs_cae.codec.errors import CorruptBlobError
from pacs_cae.codec.lossless import decode_lossless, encode_lossless, is_verbatim, store_verbatim
from pacs_cae.codec.weights import ModelCard
from pacs_cae.config import CompressionRule
from pacs_cae.store.schema import Instance, InstanceBlob
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


def test_worker_repacks_before_judging_so_require_gain_sees_the_lossless_size(open_archive) -> None:
    archive: Archive = open_archive(gate=True, min_psnr_db=None)
    series = [reread(ds) for ds in make_mr_series(2, 64, 64)]
    for ds in series:
        archive.store(ds)
    report = archive.compress_pending()
    assert report.instances == 2
    for inst, blob in _rows(archive):
        assert not is_verbatim(blob)  # lossy, or the exact lossless encoding: never left raw by a worker
        assert inst.stored_pixel_bytes == len(blob)


def test_no_job_means_encoded_at_once(open_archive) -> None:
    archive: Archive = open_archive()
    archive.settings.compression.rules = [CompressionRule(name="keep", compress=False)]
    ds = reread(make_mr_series(1, 64, 64)[0])
    assert archive.store(ds).compression_rule is None
    [(_, blob)] = _rows(archive)
    assert not is_verbatim(blob) and decode_lossless(blob) == ds.PixelData


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
