"""The compression job queue, in the archive's own database (no broker): enqueue, claim, finish, retry.

One row per series (``compression_job``). Ingest enqueues in the transaction that stores the instance, so
an acknowledged instance always has its job. Workers claim due jobs with a lease:

* PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks rows no other worker is claiming right now; the
  claim transaction sets ``state = 'running'``, the owner and ``lease_expires`` and commits at once, so no
  row lock is held while the model runs. Any number of workers, on any machine.
* SQLite: write transactions are serialised (``BEGIN IMMEDIATE``), and a claim returns nothing while another
  owner holds an unexpired lease: one worker at a time.

A worker that dies leaves its jobs ``running``; once the lease expires the next claim takes them over.
``attempts`` counts the runs that did not finish (abandoned leases and failures); when it reaches
``max_attempts`` the job is ``failed`` with the reason, until ``retry`` (or a newly stored instance) resets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pacs_cae.store.schema import CompressionJob, Instance, utcnow

#: The ``rule`` of a series no rule compresses: its worker only re-codes it exactly
#: (:data:`pacs_cae.archive.compression_rules.LOSSLESS_JOB`). It never replaces a compressing rule on the
#: series' row: that rule's run judges the whole series, and keeps it lossless if a slice cannot be encoded.
LOSSLESS_JOB = "(lossless)"


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs from a claimed row (detached from the claim's session)."""

    id: int
    series_pk: int
    rule: str
    generation: int
    decision: str | None
    attempts: int


def enqueue(session: Session, series_pk: int, rule: str, not_before: datetime) -> None:
    """Create the series' job, or make it due again for a newly stored instance (same transaction).

    A running job stays running (its worker sees the newer ``generation`` when it finishes and leaves the
    job pending); a done or failed one becomes pending with fresh attempts.
    """
    dialect = session.get_bind().dialect.name
    stmt = _ENQUEUE.get(dialect)
    if stmt is None:
        stmt = _ENQUEUE[dialect] = _enqueue_statement(dialect)
    now = utcnow()
    session.execute(stmt, {"series_pk": series_pk, "rule": rule, "not_before": not_before, "now": now})


#: One INSERT ... ON CONFLICT statement per dialect, built once (C-STORE runs it for every instance; building
#: the expression each time cost more than executing it).
_ENQUEUE: dict[str, Any] = {}


def _enqueue_statement(dialect: str) -> Any:
    table = cast(Table, CompressionJob.__table__)
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now: Any = bindparam("now")
    stmt = insert(table).values(
        series_pk=bindparam("series_pk"), state="pending", rule=bindparam("rule"),
        not_before=bindparam("not_before"), generation=1, attempts=0, compressed_instances=0, saved_bytes=0,
        created=now, updated=now,
    )
    running = table.c.state == "running"
    return stmt.on_conflict_do_update(
        index_elements=[table.c.series_pk],
        set_={
            "generation": table.c.generation + 1,
            "state": case((running, "running"), else_="pending"),
            "attempts": case((running, table.c.attempts), else_=0),
            "last_error": case((running, table.c.last_error), else_=None),
            "rule": case((stmt.excluded.rule == LOSSLESS_JOB, table.c.rule), else_=stmt.excluded.rule),
            "not_before": stmt.excluded.not_before,
            "updated": now,
        },
    )


def claim(session: Session, owner: str, *, limit: int, lease_s: float, max_attempts: int,
          ignore_delay: bool = False) -> list[ClaimedJob]:
    """Lease up to ``limit`` due jobs to ``owner``; the caller commits at once (see the module docstring)."""
    now = utcnow()
    expired = and_(CompressionJob.state == "running", CompressionJob.lease_expires < now)
    _fail_abandoned(session, expired, max_attempts)
    sqlite = session.get_bind().dialect.name == "sqlite"
    if sqlite and session.scalar(select(func.count()).where(
            CompressionJob.state == "running", CompressionJob.lease_expires >= now,
            CompressionJob.lease_owner != owner)):
        return []  # SQLite: one worker at a time
    due = CompressionJob.state == "pending"
    if not ignore_delay:
        due = and_(due, CompressionJob.not_before <= now)
    stmt = (select(CompressionJob).where(or_(due, expired)).order_by(CompressionJob.not_before, CompressionJob.id)
            .limit(limit))
    stmt = stmt if sqlite else stmt.with_for_update(skip_locked=True)
    jobs = list(session.scalars(stmt))
    expires = now + timedelta(seconds=lease_s)
    for job in jobs:
        if job.state == "running":  # its previous owner's lease expired: that run was abandoned
            job.attempts += 1
        job.state, job.lease_owner, job.lease_expires = "running", owner, expires
        job.claimed_generation = job.generation
        job.updated = now
    session.flush()
    return [ClaimedJob(j.id, j.series_pk, j.rule, j.generation, j.decision, j.attempts) for j in jobs]


def _fail_abandoned(session: Session, expired: Any, max_attempts: int) -> None:
    """Jobs whose lease expired ``max_attempts`` times are failed, not retried forever (a poison series)."""
    session.execute(
        update(CompressionJob).where(expired, CompressionJob.attempts + 1 >= max_attempts)
        .values(state="failed", attempts=CompressionJob.attempts + 1, lease_owner=None, lease_expires=None,
                updated=utcnow(), last_error=f"abandoned: {max_attempts} run(s) did not finish within the lease "
                                             "(worker killed or hung)")
        .execution_options(synchronize_session=False)
    )


def lock_own(session: Session, job: ClaimedJob, owner: str) -> CompressionJob | None:
    """The job row locked for the finishing transaction, or None when ``owner`` no longer holds its lease."""
    row = session.scalars(select(CompressionJob).where(CompressionJob.id == job.id).with_for_update()).one_or_none()
    if row is None or row.state != "running" or row.lease_owner != owner:
        return None
    return row


def renew(session: Session, jobs: list[ClaimedJob], owner: str, lease_s: float) -> None:
    """Extend the lease of ``owner``'s running jobs (called between batches of a long run)."""
    session.execute(
        update(CompressionJob)
        .where(CompressionJob.id.in_([j.id for j in jobs]), CompressionJob.lease_owner == owner,
               CompressionJob.state == "running")
        .values(lease_expires=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )


def finish(row: CompressionJob, *, decision: str | None, compressed: int, saved_bytes: int) -> None:
    """Record a successful run on the locked ``row``; newer instances (generation moved) keep it pending."""
    row.state = "done" if row.generation == row.claimed_generation else "pending"
    if decision is not None:
        row.decision = decision
    row.compressed_instances += compressed
    row.saved_bytes += saved_bytes
    row.lease_owner = row.lease_expires = None
    row.last_error = None
    row.updated = utcnow()


def record_failure(session: Session, job: ClaimedJob, owner: str, reason: str, *, max_attempts: int,
                   retry_after_s: float) -> bool:
    """A run that raised: pending again after a pause, or failed after ``max_attempts``; True when failed."""
    row = lock_own(session, job, owner)
    if row is None:
        return False
    row.attempts += 1
    failed = row.attempts >= max_attempts
    row.state = "failed" if failed else "pending"
    row.last_error = reason[:2000]
    row.not_before = utcnow() + timedelta(seconds=retry_after_s)
    row.lease_owner = row.lease_expires = None
    row.updated = utcnow()
    return failed


def retry(session: Session, job_ids: list[int] | None = None) -> int:
    """Make failed jobs (all, or these ids) pending now with fresh attempts; the number changed."""
    stmt = update(CompressionJob).where(CompressionJob.state == "failed")
    if job_ids:
        stmt = stmt.where(CompressionJob.id.in_(job_ids))
    result = session.execute(stmt.values(state="pending", attempts=0, not_before=utcnow(), updated=utcnow())
                             .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def awaiting(session: Session) -> Any:
    """Instances still stored losslessly in series whose job is not done: ``(count, stored bytes)``."""
    return session.execute(
        select(func.count(Instance.id), func.coalesce(func.sum(Instance.stored_pixel_bytes), 0))
        .join(CompressionJob, CompressionJob.series_pk == Instance.series_pk)
        .where(CompressionJob.state != "done", Instance.storage == "lossless", Instance.fallback_reason.is_(None))
    ).one()


def backlog(session: Session) -> dict[str, Any]:
    """Job counts by state, what awaits compression and what was saved so far (``pacs-cae stats``)."""
    counts = dict(session.execute(select(CompressionJob.state, func.count()).group_by(CompressionJob.state)).all())
    due = session.scalar(select(func.count()).where(CompressionJob.state == "pending",
                                                     CompressionJob.not_before <= utcnow()))
    instances, awaiting_bytes = awaiting(session)
    compressed, saved = session.execute(select(func.coalesce(func.sum(CompressionJob.compressed_instances), 0),
                                               func.coalesce(func.sum(CompressionJob.saved_bytes), 0))).one()
    failed = session.execute(select(CompressionJob.id, CompressionJob.rule, CompressionJob.last_error)
                             .where(CompressionJob.state == "failed").order_by(CompressionJob.id).limit(20)).all()
    return {
        "pending": int(counts.get("pending", 0)),
        "due": int(due or 0),
        "running": int(counts.get("running", 0)),
        "done": int(counts.get("done", 0)),
        "failed": int(counts.get("failed", 0)),
        "instances_awaiting": int(instances),
        "bytes_awaiting": int(awaiting_bytes),
        "instances_compressed": int(compressed),
        "saved_bytes": int(saved),
        "failed_jobs": [{"id": i, "rule": r, "reason": e} for i, r, e in failed],
    }


__all__ = ["LOSSLESS_JOB", "ClaimedJob", "awaiting", "backlog", "claim", "enqueue", "finish", "lock_own", "record_failure",
           "renew", "retry"]
