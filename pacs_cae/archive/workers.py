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
from pacs_cae.archive.repack import repack
from pacs_cae.config import Settings
from pacs_cae.store import jobs
from pacs_cae.store.db import Database
from pacs_cae.store.schema import CompressionJob, utcnow

LOG = logging.getLogger(__name__)


def owner_id(name: str = "worker") -> str:
    """A lease owner that is unique across machines, processes and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{name}:{uuid.uuid4().hex[:8]}"


class CompressionWorker:
    """Claims due jobs and compresses them until told to stop (or, draining, until none is left)."""

    def __init__(self, database: Database, settings: Settings, encoders: EncoderSource, *,
                 name: str = "worker") -> None:
        self.database = database
        self.settings = settings
        self.encoders = encoders
        self.owner = owner_id(name)

    def run_once(self, *, ignore_delay: bool = False) -> RunReport | None:
        """Claim and process one set of jobs; None when nothing could be claimed."""
        c = self.settings.compression
        with self.database.session() as session:
            claimed = jobs.claim(session, self.owner, limit=c.series_per_claim, lease_s=c.lease_s,
                                 max_attempts=c.max_attempts, ignore_delay=ignore_delay)
        if not claimed:
            return None
        # C-STORE wrote these series' pixels verbatim: the exact lossless encoding first (see repack)
        repack(self.database, [job.series_pk for job in claimed], brotli_quality=self.settings.codec.brotli_quality)
        return compress_claimed(self.database, self.settings, self.encoders, self.owner, claimed)

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
    compression is off or no rule has a model to compress with."""
    if not settings.compression.enabled or not _any_model(settings):
        return 0
    configured = settings.compression.serve_workers
    return (1 if database.is_sqlite else 0) if configured is None else configured


__all__ = ["CompressionWorker", "WorkerThreads", "owner_id", "serve_worker_count"]
