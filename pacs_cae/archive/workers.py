"""Compression workers: the claim / compress loop, as threads inside ``serve`` or a ``pacs-cae worker`` process.

A worker owns nothing but an owner id (host, pid, name, random suffix) and the archive's codecs; all state is in
the database (:mod:`pacs_cae.store.jobs`), so any number of worker processes on any machines that reach the
PostgreSQL database can run side by side, and a killed one loses nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from pacs_cae.archive.compression import EncoderSource, RunReport, compress_claimed
from pacs_cae.archive.compression_rules import LOSSLESS_JOB, recodes_lossless
from pacs_cae.archive.repack import repack
from pacs_cae.codec.base import SliceCodec
from pacs_cae.config import Settings
from pacs_cae.store import jobs
from pacs_cae.store.db import Database
from pacs_cae.store.schema import CompressionJob, utcnow

LOG = logging.getLogger(__name__)


#: A model is skipped when the best PSNR its card measured is this far below the ``min_psnr_db`` floor: card
#: figures are means over evaluation slices, and single slices of ``cae-paper`` spread ~2 dB around its mean.
PSNR_MARGIN_DB = 6.0


def card_best_psnr(encoder: SliceCodec) -> float | None:
    """The best PSNR (dB) the model's card reports: its evaluation, its validation during training, the
    targets its operating points guarantee; None when the card measured nothing (then nothing is skipped)."""
    extra = encoder.card.extra if encoder.card is not None else {}
    values = [extra.get("psnr_db"), extra.get("best_val_psnr_db_during_training")]
    for point in extra.get("operating_points") or []:
        values += [point.get("validation_psnr_db"), point.get("residual_db")]
    found = [float(v) for v in values if isinstance(v, (int, float))]
    return max(found) if found else None


class FloorAwareEncoders:
    """The archive's encoders, minus models whose card shows they cannot meet the ``min_psnr_db`` floor.

    Why: with the defaults (``cae-paper``, 50 dB) every series would be encoded and decoded only to be kept
    lossless; the worker instead records the series as decided lossless, with :meth:`missing_reason`, and
    spends no CPU on the model. Logged once per model. A rule can only tighten the floor, so the ``[codec]``
    floor is the one that decides.
    """

    def __init__(self, encoders: EncoderSource, settings: Settings) -> None:
        self.encoders = encoders
        self.settings = settings
        self._hopeless: dict[str, str | None] = {}

    def encoder_for(self, model: str) -> SliceCodec | None:
        encoder = self.encoders.encoder_for(model)
        if encoder is None or self._why_hopeless(model, encoder) is None:
            return encoder
        return None

    def missing_reason(self, model: str) -> str | None:
        return self._hopeless.get(model)

    def _why_hopeless(self, model: str, encoder: SliceCodec) -> str | None:
        if model not in self._hopeless:
            self._hopeless[model] = None
            floor = self.settings.codec.min_psnr_db if self.settings.codec.gate else None
            best = card_best_psnr(encoder)
            if floor is not None and best is not None and best < floor - PSNR_MARGIN_DB:
                why = (f"model {encoder.model_id!r} cannot meet min_psnr_db {floor:g} (its card's best "
                       f"measurement is {best:.1f} dB); not encoded")
                LOG.warning("compression: %s: its series are kept lossless", why)
                self._hopeless[model] = why
        return self._hopeless[model]


def owner_id(name: str = "worker") -> str:
    """A lease owner that is unique across machines, processes and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{name}:{uuid.uuid4().hex[:8]}"


class CompressionWorker:
    """Claims due jobs and compresses them until told to stop (or, draining, until none is left)."""

    def __init__(self, database: Database, settings: Settings, encoders: EncoderSource, *,
                 name: str = "worker") -> None:
        self.database = database
        self.settings = settings
        self.encoders = FloorAwareEncoders(encoders, settings)
        self.owner = owner_id(name)

    def run_once(self, *, ignore_delay: bool = False) -> RunReport | None:
        """Claim and process one set of jobs; None when nothing could be claimed."""
        c = self.settings.compression
        with self.database.session() as session:
            claimed = jobs.claim(session, self.owner, limit=c.series_per_claim, lease_s=c.lease_s,
                                 max_attempts=c.max_attempts, ignore_delay=ignore_delay)
        if not claimed:
            return None
        # C-STORE wrote these series' pixels verbatim. A series no rule compresses gets its final exact coding
        # (repack); the others are re-coded by compress_claimed only where a slice stays lossless
        codec = self.settings.codec
        recoded = repack(self.database, [job.series_pk for job in claimed if job.rule == LOSSLESS_JOB],
                         brotli_quality=codec.brotli_quality, methods=codec.lossless_methods)
        report = compress_claimed(self.database, self.settings, self.encoders, self.owner, claimed)
        report.recoded += recoded
        return report

    def outstanding(self, *, ignore_delay: bool = False) -> int:
        """Jobs a drain still waits for: due pending ones (any pending with ``ignore_delay``) and running ones.

        A running job of another worker is waited for: it may still fail, or its worker may have died, in
        which case this drain reclaims it once the lease expires.
        """
        due = CompressionJob.state == "pending"
        if not ignore_delay:
            due = due & (CompressionJob.not_before <= utcnow())
        with self.database.session(readonly=True) as session:
            return int(session.scalar(select(func.count()).where(due | (CompressionJob.state == "running"))) or 0)

    def run(self, stop: threading.Event, *, drain: bool = False, ignore_delay: bool = False,
            on_report: Callable[[RunReport], None] | None = None) -> RunReport:
        """Loop until ``stop`` is set, or (``drain``) until no due or running job is left."""
        total = RunReport()
        while not stop.is_set():
            try:
                report = self.run_once(ignore_delay=ignore_delay)
            except SQLAlchemyError as exc:  # the database is down or busy: keep the worker alive
                LOG.error("compression worker %s: database error: %s", self.owner, exc)
                report = None
            if report is not None:
                total.add(report)
                if on_report is not None:
                    on_report(report)
                continue
            if drain and self.outstanding(ignore_delay=ignore_delay) == 0:
                break
            stop.wait(self.settings.compression.poll_s)
        return total


class WorkerThreads:
    """The worker threads ``serve`` runs beside the DICOM AE (``compression.serve_workers``)."""

    def __init__(self, database: Database, settings: Settings, encoders: EncoderSource, count: int) -> None:
        self._stop = threading.Event()
        self.workers = [CompressionWorker(database, settings, encoders, name=f"serve-{i}") for i in range(count)]
        self._threads = [threading.Thread(target=self._run, args=(w,), name=f"compression-{i}", daemon=True)
                         for i, w in enumerate(self.workers)]
        for thread in self._threads:
            thread.start()

    def _run(self, worker: CompressionWorker) -> None:
        try:
            worker.run(self._stop)
        except Exception:
            LOG.exception("compression worker %s stopped", worker.owner)

    def stop(self, timeout: float | None = None) -> None:
        """Finish the current run (its transaction commits or rolls back), then stop."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)


def _any_model(settings: Settings) -> bool:
    """Whether any compression rule names a learned codec (``codec.model = "none"``: no job is ever made)."""
    from pacs_cae.archive.compression_rules import NO_MODEL

    models = [rule.model or settings.codec.model for rule in settings.compression.effective_rules(settings.codec)]
    return any(m.strip().lower() not in NO_MODEL for m in models)


def serve_worker_count(settings: Settings, database: Database) -> int:
    """``compression.serve_workers``, defaulting to 1 on SQLite (embedded) and 0 on a server database; 0 when
    compression is off, or no rule has a model to compress with and there is nothing to re-code exactly."""
    if not settings.compression.enabled or not (_any_model(settings) or recodes_lossless(settings)):
        return 0
    configured = settings.compression.serve_workers
    return (1 if database.is_sqlite else 0) if configured is None else configured


__all__ = ["CompressionWorker", "WorkerThreads", "owner_id", "serve_worker_count"]
