"""Deferred compression (issue 12): the C-STORE fast path, per-series workers, leases, rules, retries.

Real codec, real SQLite and PostgreSQL (the ``database_url`` fixtures); a "killed" worker is one that claimed
jobs and never finished them, which is exactly what a SIGKILL leaves in the database.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from pacs_cae.archive.compression import compress_claimed
from pacs_cae.archive.service import Archive
from pacs_cae.archive.workers import CompressionWorker
from pacs_cae.cli import app
from pacs_cae.config import CompressionRule, ConfigError, load_settings
from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.store import jobs
from pacs_cae.store.schema import CompressionJob, Instance, InstanceBlob, utcnow
from pacs_cae.testing.factories import make_mr_series, set_pixels
from tests.archive.helpers import TEST_MODEL, load_one, refs_for, reread, store_and_compress


def _job(archive: Archive) -> CompressionJob:
    with archive.database.session(readonly=True) as session:
        return session.scalars(select(CompressionJob)).one()


def _storage(archive: Archive) -> dict[str, tuple[str, str | None]]:
    with archive.database.session(readonly=True) as session:
        return {uid: (storage, reason) for uid, storage, reason in session.execute(
            select(Instance.sop_instance_uid, Instance.storage, Instance.fallback_reason))}


def _blobs(archive: Archive) -> dict[int, bytes]:
    with archive.database.session(readonly=True) as session:
        return dict(session.execute(select(InstanceBlob.instance_pk, InstanceBlob.pixel_blob)).all())


def _expire_leases(archive: Archive) -> None:
    with archive.database.session() as session:
        session.execute(update(CompressionJob).values(lease_expires=utcnow() - timedelta(seconds=1)))


def _identifier(**keys: str) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_store_commits_lossless_and_a_job_then_the_worker_swaps_the_whole_series(open_archive) -> None:
    archive: Archive = open_archive()
    series = [reread(ds) for ds in make_mr_series(3, 64, 64)]
    outcomes = [archive.store(ds) for ds in series]
    assert [(o.storage, o.compression_rule) for o in outcomes] == [("lossless", "default")] * 3
    job = _job(archive)
    assert (job.state, job.generation, job.attempts) == ("pending", 3, 0)  # one job per series
    backlog = archive.stats()["compression"]
    assert (backlog["pending"], backlog["instances_awaiting"]) == (1, 3)
    assert backlog["bytes_awaiting"] == sum(o.stored_pixel_bytes for o in outcomes)
    for ds in series:  # before compression: exactly what was sent
        assert load_one(archive, ds.SOPInstanceUID) == ds

    report = archive.compress_pending()
    assert (report.jobs, report.compressed, report.kept_lossless, report.failed_jobs) == (1, 3, 0, 0)
    assert {s for s, _ in _storage(archive).values()} == {"cae"}
    job = _job(archive)
    assert (job.state, job.decision, job.compressed_instances, job.lease_owner) == ("done", "lossy", 3, None)
    backlog = archive.stats()["compression"]
    assert (backlog["done"], backlog["instances_awaiting"], backlog["instances_compressed"]) == (1, 0, 3)
    assert backlog["saved_bytes"] == job.saved_bytes > 0
    # after: a declared lossy copy, located by the original or the derived UID
    first = series[0]
    derived = derive_lossy_uid(first.SOPInstanceUID, TEST_MODEL)
    for uid in (first.SOPInstanceUID, derived):
        ident = _identifier(QueryRetrieveLevel="IMAGE", StudyInstanceUID=first.StudyInstanceUID,
                            SeriesInstanceUID=first.SeriesInstanceUID, SOPInstanceUID=uid)
        [(_, served)] = list(archive.load(archive.locate("S", ident)))
        assert served.SOPInstanceUID == derived and served.LossyImageCompression == "01"


def _nearly_empty(ds: Dataset) -> Dataset:
    pixels = np.zeros((ds.Rows, ds.Columns), dtype=np.uint16)
    pixels[20:24, 20:26] = 3000
    set_pixels(ds, pixels, bits_stored=12, signed=False)
    return reread(ds)


def test_one_slice_below_a_floor_keeps_the_whole_series_lossless(open_archive) -> None:
    archive: Archive = open_archive(require_gain=True)
    series = [reread(ds) for ds in make_mr_series(3, 512, 512, bits_stored=12)]
    series[1] = _nearly_empty(series[1])  # JPEG-LS beats any CAE blob here: "no-gain"
    stored = store_and_compress(archive, *series)
    assert [s.storage for s in stored] == ["lossless"] * 3
    assert stored[1].fallback_reason.startswith("no-gain")
    assert all(s.fallback_reason.startswith("series-lossless: slice " + series[1].SOPInstanceUID)
               for s in (stored[0], stored[2]))
    assert _job(archive).decision == "lossless"
    for ds in series:
        assert load_one(archive, ds.SOPInstanceUID).PixelData == ds.PixelData
    # a late slice of that series follows the series' decision
    late = reread(make_mr_series(4, 512, 512, bits_stored=12)[3])
    late.SeriesInstanceUID, late.StudyInstanceUID = series[0].SeriesInstanceUID, series[0].StudyInstanceUID
    (after,) = store_and_compress(archive, late)
    assert after.storage == "lossless" and after.fallback_reason.startswith("series-lossless")


def test_a_killed_worker_loses_nothing_its_job_is_reclaimed_after_the_lease(open_archive) -> None:
    archive: Archive = open_archive()
    series = [reread(ds) for ds in make_mr_series(2, 64, 64)]
    for ds in series:
        archive.store(ds)
    with archive.database.session() as session:  # the dead worker's claim
        assert len(jobs.claim(session, "dead-worker", limit=4, lease_s=600, max_attempts=3)) == 1
    other = CompressionWorker(archive.database, archive.settings, archive.codecs, name="other")
    assert other.run_once(ignore_delay=True) is None  # leased: nobody else takes it
    assert {s for s, _ in _storage(archive).values()} == {"lossless"}
    for ds in series:  # retrieve meanwhile: complete
        assert load_one(archive, ds.SOPInstanceUID) == ds
    _expire_leases(archive)
    report = archive.compress_pending()
    assert (report.jobs, report.compressed) == (1, 2)
    job = _job(archive)
    assert (job.state, job.attempts, job.compressed_instances) == ("done", 1, 2)  # one abandoned run


def test_a_job_done_twice_changes_nothing(open_archive) -> None:
    archive: Archive = open_archive()
    for ds in make_mr_series(2, 64, 64):
        archive.store(reread(ds))
    worker = CompressionWorker(archive.database, archive.settings, archive.codecs, name="slow")
    with archive.database.session() as session:
        slow_claim = jobs.claim(session, worker.owner, limit=4, lease_s=600, max_attempts=3)
    _expire_leases(archive)  # the slow worker's lease runs out; another one does the job
    assert archive.compress_pending().compressed == 2
    blobs = _blobs(archive)
    late = compress_claimed(archive.database, archive.settings, archive.codecs, worker.owner, slow_claim)
    assert (late.compressed, late.lost_leases) == (0, 1)
    with archive.database.session() as session:  # and a job made due again finds nothing left to do
        session.execute(update(CompressionJob).values(state="pending"))
    assert archive.compress_pending().compressed == 0
    assert _blobs(archive) == blobs and _job(archive).compressed_instances == 2


def test_an_abandoned_job_fails_with_its_reason_and_is_retried_from_the_cli(open_archive, database_url) -> None:
    archive: Archive = open_archive()
    archive.settings.compression.max_attempts = 1
    archive.store(reread(make_mr_series(1, 64, 64)[0]))
    with archive.database.session() as session:
        jobs.claim(session, "dead-worker", limit=1, lease_s=600, max_attempts=1)
    _expire_leases(archive)
    assert archive.compress_pending().jobs == 0
    backlog = archive.stats()["compression"]
    assert backlog["failed"] == 1 and backlog["failed_jobs"][0]["reason"].startswith("abandoned: 1 run(s) did not finish")

    runner = CliRunner()
    listed = runner.invoke(app, ["jobs", "list", "--state", "failed", "--database-url", database_url])
    assert listed.exit_code == 0 and "abandoned" in listed.output and "1 job(s)" in listed.output
    retried = runner.invoke(app, ["jobs", "retry", "--database-url", database_url])
    assert retried.exit_code == 0 and "1 failed job(s) made pending again" in retried.output
    assert archive.compress_pending().compressed == 1
    assert _job(archive).state == "done"
    bad = runner.invoke(app, ["jobs", "list", "--state", "bogus", "--database-url", database_url])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_rules_select_by_calling_ae_and_can_keep_lossless(open_archive) -> None:
    archive: Archive = open_archive()
    archive.settings.compression.rules = [
        CompressionRule(name="research", calling_aets=["RESEARCH"], compress=False),
        CompressionRule(name="mr", modalities=["MR"]),
    ]
    kept = [reread(ds) for ds in make_mr_series(1, 64, 64)]
    compressed = [reread(ds) for ds in make_mr_series(1, 64, 64)]
    assert archive.store(kept[0], calling_aet="RESEARCH").compression_rule is None
    assert archive.store(compressed[0], calling_aet="SCANNER").compression_rule == "mr"
    archive.compress_pending()
    states = _storage(archive)
    assert states[kept[0].SOPInstanceUID] == ("lossless", None)
    assert states[compressed[0].SOPInstanceUID][0] == "cae"


def test_study_age_rule_defers_the_job_until_the_study_is_old_enough(open_archive) -> None:
    archive: Archive = open_archive()
    archive.settings.compression.rules = [CompressionRule(name="old-mr", after_days=30)]
    recent, old = (reread(make_mr_series(1, 64, 64)[0]) for _ in range(2))  # two studies
    old.StudyDate = (utcnow() - timedelta(days=400)).strftime("%Y%m%d")
    recent.StudyDate = utcnow().strftime("%Y%m%d")
    archive.store(recent)
    archive.store(old)
    report = archive.compress_pending(ignore_delay=False)
    assert report.compressed == 1
    states = _storage(archive)
    assert states[old.SOPInstanceUID][0] == "cae" and states[recent.SOPInstanceUID][0] == "lossless"
    assert archive.stats()["compression"]["pending"] == 1


def test_parallel_workers_compress_every_instance_exactly_once(open_archive) -> None:
    archive: Archive = open_archive()
    archive.settings.compression.series_per_claim = 1
    for _ in range(4):
        for ds in make_mr_series(2, 64, 64):
            archive.store(reread(ds))
    stop = threading.Event()
    workers = [CompressionWorker(archive.database, archive.settings, archive.codecs, name=f"w{i}") for i in range(2)]
    threads = [threading.Thread(target=w.run, args=(stop,), kwargs={"drain": True, "ignore_delay": True})
               for w in workers]
    loads: list[object] = []

    def retrieve_meanwhile() -> None:
        refs = refs_for(archive, *_storage(archive))
        while any(t.is_alive() for t in threads):
            loads.extend(result for _, result in archive.load(refs))

    for t in threads:
        t.start()
    retrieve_meanwhile()
    for t in threads:
        t.join(120)
    assert {s for s, _ in _storage(archive).values()} == {"cae"}
    with archive.database.session(readonly=True) as session:
        assert session.scalar(select(func.sum(CompressionJob.compressed_instances))) == 8
        assert set(session.scalars(select(CompressionJob.state))) == {"done"}
    assert all(isinstance(r, Dataset) for r in loads)  # every retrieve during compression was complete


def test_compression_rules_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[compression]\ndelay_s = 5\n[[compression.rules]]\nname = "brain"\nmodalities = ["mr"]\n'
                    'body_parts = ["HEAD"]\nmin_psnr_db = 55\n[[compression.rules]]\nname = "rest"\n'
                    'compress = false\nmodalities = []\n')
    settings = load_settings(path)
    brain, rest = settings.compression.rules
    assert (brain.name, brain.modalities, brain.body_parts, brain.min_psnr_db) == ("brain", ["MR"], ["HEAD"], 55.0)
    assert (rest.compress, rest.modalities) == (False, [])
    path.write_text('[[compression.rules]]\nname = "x"\nmodality = ["MR"]\n')
    with pytest.raises(ConfigError, match="compression.rules.*unknown key.*modality"):
        load_settings(path)


class CountingCodec:
    """The archive's codec, counting the slices it is asked to encode."""

    def __init__(self, inner: object) -> None:
        self.inner, self.encoded = inner, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def encode(self, slices, **kwargs):  # type: ignore[no-untyped-def]
        self.encoded += len(slices)
        return self.inner.encode(slices, **kwargs)  # type: ignore[attr-defined]


def test_a_series_is_settled_by_its_first_miss_and_its_other_slices_are_not_encoded(open_archive) -> None:
    archive: Archive = open_archive(require_gain=True, batch_size=2)
    missing = [reread(ds) for ds in make_mr_series(6, 64, 64, bits_stored=12)]
    missing[0] = _nearly_empty(missing[0])  # "no-gain": the series stays lossless, decided by chunk one
    passing = [reread(ds) for ds in make_mr_series(3, 64, 64, bits_stored=12, seed=5)]
    for ds in missing + passing:
        archive.store(ds)
    codec = CountingCodec(archive.codecs.encoder_for(""))

    class Source:
        def encoder_for(self, model: str) -> CountingCodec:
            return codec

    worker = CompressionWorker(archive.database, archive.settings, Source(), name="counting")
    runs = []
    while (run := worker.run_once(ignore_delay=True)) is not None:
        runs.append(run)
    assert (sum(r.compressed for r in runs), sum(r.kept_lossless for r in runs)) == (3, 6)
    assert codec.encoded == 2 + 3  # the first chunk of the missing series, and every slice of the other
    stored = {uid: load_one(archive, uid) for uid in (str(ds.SOPInstanceUID) for ds in missing)}
    assert all(ds.PixelData == stored[str(ds.SOPInstanceUID)].PixelData for ds in missing)
    with archive.database.session(readonly=True) as session:
        reasons = dict(session.execute(select(Instance.sop_instance_uid, Instance.fallback_reason)
                                       .where(Instance.storage == "lossless")).tuples().all())
    assert set(reasons) == set(stored)
    assert reasons[str(missing[0].SOPInstanceUID)].startswith("no-gain")
    assert all(reasons[str(ds.SOPInstanceUID)].startswith(f"series-lossless: slice {missing[0].SOPInstanceUID}")
               for ds in missing[1:])


def _drain_peak(archive: Archive, slices: int) -> tuple[int, int]:
    """(peak traced bytes of draining one new series of ``slices`` 256x256 slices, its pixel bytes)."""
    import tracemalloc

    series = [reread(ds) for ds in make_mr_series(slices, 256, 256, bits_stored=12)]
    for ds in series:
        archive.store(ds)
    pixel_bytes = sum(len(ds.PixelData) for ds in series)
    del series
    tracemalloc.start()
    try:
        assert archive.compress_pending().compressed == slices
        return tracemalloc.get_traced_memory()[1], pixel_bytes
    finally:
        tracemalloc.stop()


def test_a_drain_holds_one_chunk_of_pixels_not_the_series(open_archive) -> None:
    """Memory of a run (tracemalloc counts numpy's buffers) does not grow with the series' pixels: one chunk's
    frames and working set, plus a lossy blob per slice. Before commit 514ab45 every frame of the series was
    read first: the peak grew by about 2x the added pixel bytes."""
    archive: Archive = open_archive()
    short_peak, short_bytes = _drain_peak(archive, 16)
    long_peak, long_bytes = _drain_peak(archive, 48)
    growth = (long_peak - short_peak) / (long_bytes - short_bytes)
    assert growth < 0.5, f"the peak grew by {growth:.2f}x the added pixel bytes"


def test_a_codec_failure_keeps_the_lossless_copy_and_fails_the_job_with_its_reason(open_archive) -> None:
    archive: Archive = open_archive()
    archive.settings.compression.max_attempts = 2
    original = reread(make_mr_series(1, 64, 64)[0])
    archive.store(original)

    class Broken:
        model_id, weights_sha256, card, supports_max_abs_error = TEST_MODEL, "0" * 64, None, False

        def encode(self, slices, *, bits_stored=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("out of GPU memory")

        decode = encode

    class Source:
        def encoder_for(self, model: str) -> Broken:
            return Broken()

    worker = CompressionWorker(archive.database, archive.settings, Source(), name="broken")
    assert worker.run_once(ignore_delay=True).failed_jobs == 0  # first failure: pending again, backing off
    job = _job(archive)
    assert (job.state, job.attempts, job.last_error) == ("pending", 1, "codec failed (see the worker log)")
    with archive.database.session() as session:
        session.execute(update(CompressionJob).values(not_before=utcnow()))
    assert worker.run_once().failed_jobs == 1
    assert _job(archive).state == "failed"
    assert load_one(archive, original.SOPInstanceUID) == original  # nothing lost
    with archive.database.session() as session:
        assert jobs.retry(session) == 1
    assert archive.compress_pending().compressed == 1  # the real codec, after the retry


def test_compression_rules_cannot_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACS_CAE_COMPRESSION_RULES", "MR")
    with pytest.raises(ConfigError, match="compression.rules: expected a table"):
        load_settings()


def test_serve_worker_threads_compress_in_the_background(open_archive) -> None:
    from pacs_cae.archive.workers import WorkerThreads, serve_worker_count

    archive: Archive = open_archive()
    expected = 1 if archive.database.is_sqlite else 0  # embedded SQLite: on by default; PostgreSQL: workers
    assert serve_worker_count(archive.settings, archive.database) == expected
    archive.settings.compression.serve_workers = 1
    threads = WorkerThreads(archive.database, archive.settings, archive.codecs, 1)
    try:
        original = reread(make_mr_series(1, 64, 64)[0])
        assert archive.store(original).storage == "lossless"  # answered before any compression
        deadline = time.monotonic() + 60
        while _storage(archive)[original.SOPInstanceUID][0] != "cae":
            assert time.monotonic() < deadline, "the worker thread did not compress the series"
            time.sleep(0.05)
    finally:
        threads.stop()
    archive.settings.codec.model = "none"  # a lossless archive still re-codes C-STORE's verbatim copies
    archive.settings.compression.serve_workers = None
    assert serve_worker_count(archive.settings, archive.database) == expected
    archive.settings.codec.lossless_methods = []  # nothing to compress or re-code with: no thread
    assert serve_worker_count(archive.settings, archive.database) == 0
    archive.settings.compression.enabled = False
    assert serve_worker_count(archive.settings, archive.database) == 0


def _frames_in_memory() -> int:
    """Frames the worker holds right now (its _Slice objects with pixels)."""
    import gc

    from pacs_cae.archive.compression import _Slice

    return sum(1 for o in gc.get_objects() if isinstance(o, _Slice) and o.frame.size)


def test_a_series_is_read_a_chunk_at_a_time(open_archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large series never has all its frames in memory: only the chunk being coded."""
    from pacs_cae.archive import compression

    archive: Archive = open_archive(batch_size=2)
    series = [reread(ds) for ds in make_mr_series(6, 64, 64)]
    for ds in series:
        archive.store(ds)
    held: list[int] = []
    real_code = compression._code
    monkeypatch.setattr(compression, "_code", lambda *a: held.append(_frames_in_memory()) or real_code(*a))
    report = archive.compress_pending()
    assert (report.compressed, report.kept_lossless) == (6, 0)
    assert held == [2, 2, 2]  # three chunks of codec.chunk_slices = 2, never the whole series


def test_a_slice_re_sent_while_its_series_is_coded_is_left_to_the_next_run(
        open_archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run decides on the slices it read; the re-sent version is judged by the job's next run, never
    swapped for a blob made from the old pixels."""
    from pacs_cae.archive import compression

    archive: Archive = open_archive(duplicate_policy="replace", batch_size=2)
    series = [reread(ds) for ds in make_mr_series(4, 64, 64)]
    for ds in series:
        archive.store(ds)
    changed = reread(series[3])
    changed.InstanceNumber = 3  # same SOP Instance UID, other content
    real_load = compression._load_frames
    calls: list[int] = []

    def load(database, settings, items, *, judged):  # the re-send lands between the read and the last chunk
        calls.append(len(items))
        if len(calls) == 2:
            assert archive.store(changed).result == "replaced"
        return real_load(database, settings, items, judged=judged)

    monkeypatch.setattr(compression, "_load_frames", load)
    first = CompressionWorker(archive.database, archive.settings, archive.codecs).run_once(ignore_delay=True)
    assert first is not None and (first.compressed, first.kept_lossless) == (3, 0)
    job = _job(archive)
    assert (job.state, job.decision) == ("pending", "lossy")  # the re-send made it due again
    storage = _storage(archive)
    assert storage[series[3].SOPInstanceUID] == ("lossless", None)
    archive.compress_pending()
    assert {s for s, _ in _storage(archive).values()} == {"cae"}
    with archive.database.session(readonly=True) as session:
        number = session.scalar(select(Instance.instance_number)
                                .where(Instance.sop_instance_uid == series[3].SOPInstanceUID))
    assert number == 3  # the re-sent version is the one stored lossy
