"""Deferred compression of claimed series: decode the lossless copies, encode in batches, judge, swap.

One run takes the jobs a worker claimed (:func:`pacs_cae.store.jobs.claim`), and for each series:

1. reads the instances still stored losslessly (and not already kept lossless by a decision), rebuilds their
   pixels exactly, and checks the codec can take every one (:func:`compression_rules.eligible`);
2. encodes the slices of *all* claimed series of one model in one call (the codec batches them, up to
   ``codec.batch_size`` per forward) and decodes the blobs again;
3. judges every slice against the floors (:class:`pacs_cae.archive.floors.Floors`);
4. per series, in **one transaction**: re-checks the lease and that each instance is unchanged since step 1,
   writes the lossy blobs and index fields, reads the blobs back and compares them with the bytes that were
   decoded and measured, then records the job done. The lossless copy disappears only with that commit.

Series-level decision: if any slice misses a floor (or cannot be encoded), no slice of the series is stored
lossy, and the job remembers ``decision = "lossless"`` so later arrivals follow it. A series decided
``"lossy"`` that receives a late slice tries that slice alone; if it misses a floor it stays lossless (the
only way a series becomes mixed, logged as a warning) - a lossy slice is never made from a failing one.

Idempotent: an instance is swapped only when it is still ``lossless`` with the same ``received_at``, so a
job run twice (a lease that expired under a slow worker) changes nothing the second time.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pacs_cae.archive.compression_rules import eligible, find_rule
from pacs_cae.archive.floors import Floors
from pacs_cae.codec.lossless import decode_lossless
from pacs_cae.config import CompressionRule, Settings
from pacs_cae.dicom.metadata import decode_metadata
from pacs_cae.dicom.pixels import extract_frames
from pacs_cae.dicom.rebuild import rebuild_lossless
from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.store import jobs
from pacs_cae.store.db import Database
from pacs_cae.store.jobs import ClaimedJob
from pacs_cae.store.schema import CodecModel, Instance, InstanceBlob

LOG = logging.getLogger(__name__)

#: ``fallback_reason`` prefix of slices kept lossless because another slice of their series missed a floor.
SERIES_LOSSLESS_REASON = "series-lossless"


class Encoder(Protocol):
    """What a worker needs from a ``Codec`` or ``BatchingCodec``."""

    model_id: str
    weights_sha256: str

    def encode(self, slices: Sequence[np.ndarray], *, bits_stored: Any = None,
               quality: Any = None) -> list[bytes]: ...
    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]: ...


class EncoderSource(Protocol):
    """Gives the encoder of a rule's model ("" = the configured ``codec.model``); None = no model."""

    def encoder_for(self, model: str) -> Encoder | None: ...


@dataclass
class _Slice:
    instance_pk: int
    sop_instance_uid: str
    received_at: datetime
    frame: np.ndarray
    bits_stored: int
    original_bytes: int  # the slice at BitsAllocated, what the compression ratio is measured against
    lossless_bytes: int  # the stored lossless blob
    blob: bytes = b""
    reason: str | None = None


@dataclass
class _Series:
    job: ClaimedJob
    rule: CompressionRule | None
    slices: list[_Slice] = field(default_factory=list)
    lossless_reason: str | None = None  # the series stays lossless (decided before encoding)
    error: str | None = None  # the run failed (retried later)


@dataclass
class RunReport:
    """What one run did (the worker's progress bar and logs)."""

    jobs: int = 0
    compressed: int = 0
    kept_lossless: int = 0
    saved_bytes: int = 0
    failed_jobs: int = 0
    lost_leases: int = 0

    @property
    def instances(self) -> int:
        return self.compressed + self.kept_lossless

    def add(self, other: RunReport) -> None:
        for name in ("jobs", "compressed", "kept_lossless", "saved_bytes", "failed_jobs", "lost_leases"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def compress_claimed(database: Database, settings: Settings, encoders: EncoderSource, owner: str,
                     claimed: list[ClaimedJob]) -> RunReport:
    """Process the jobs ``owner`` claimed; every job ends done, pending again, or failed with its reason."""
    work = [_prepare(database, settings, job) for job in claimed]
    by_model: dict[str, list[_Series]] = defaultdict(list)
    for series in work:
        if series.error is None and series.lossless_reason is None and series.rule is not None and series.slices:
            by_model[series.rule.model].append(series)
    for model, group in by_model.items():
        # codec.quality is the operating point of the configured model; a rule naming another model uses
        # that model's default point
        quality = settings.codec.quality if model in ("", settings.codec.model) else None
        encoder = encoders.encoder_for(model)
        _encode_and_judge(settings, encoder, group, quality,
                          getattr(encoders, "missing_reason", lambda _m: None)(model) if encoder is None else None)
    with database.session() as session:
        jobs.renew(session, claimed, owner, settings.compression.lease_s)
    report = RunReport()
    for series in work:
        report.add(_commit(database, settings, encoders, owner, series))
    return report


def _prepare(database: Database, settings: Settings, job: ClaimedJob) -> _Series:
    """Read the series' lossless candidates and rebuild their pixels exactly (step 1)."""
    rule = find_rule(settings.compression, settings, job.rule)
    series = _Series(job, rule)
    if rule is None or not rule.compress:
        return series  # the rule was removed or now says lossless: nothing to do
    try:
        with database.session(readonly=True) as session:
            rows = session.execute(
                select(Instance, InstanceBlob.metadata_blob, InstanceBlob.pixel_blob)
                .join(InstanceBlob, InstanceBlob.instance_pk == Instance.id)
                .where(Instance.series_pk == job.series_pk, Instance.storage == "lossless",
                       Instance.fallback_reason.is_(None))
                .order_by(Instance.instance_number, Instance.id)
            ).all()
        for inst, metadata_blob, pixel_blob in rows:
            ds = rebuild_lossless(decode_metadata(metadata_blob), decode_lossless(pixel_blob))
            ok, why = eligible(ds, settings.codec)
            pixels = extract_frames(ds) if ok else None
            if pixels is not None and len(pixels.frames) != 1:
                ok, why = False, f"{len(pixels.frames)} frames (the codec takes single-frame slices)"
            if not ok or pixels is None:
                series.lossless_reason = f"{SERIES_LOSSLESS_REASON}: instance {inst.sop_instance_uid} not eligible: {why}"
                series.slices.append(_Slice(inst.id, inst.sop_instance_uid, inst.received_at, np.empty(0), 0, 0,
                                            inst.stored_pixel_bytes, reason=why))
                continue
            frame = pixels.frames[0]
            series.slices.append(_Slice(
                inst.id, inst.sop_instance_uid, inst.received_at, frame, pixels.bits_stored,
                frame.size * max(1, (pixels.bits_allocated + 7) // 8), inst.stored_pixel_bytes))
    except Exception as exc:
        LOG.exception("compression job %d: cannot read series %d", job.id, job.series_pk)
        series.error = f"cannot read stored instances: {type(exc).__name__}: {exc}"
    if series.lossless_reason is None and job.decision == "lossless" and series.slices:
        series.lossless_reason = f"{SERIES_LOSSLESS_REASON}: an earlier slice of this series missed a floor"
    return series


def _encode_and_judge(settings: Settings, encoder: Encoder | None, group: list[_Series],
                      quality: int | None = None, missing_reason: str | None = None) -> None:
    """Encode every slice of ``group`` in one call, decode, and set each slice's floor reason (steps 2-3)."""
    if encoder is None:
        for series in group:
            series.lossless_reason = f"{SERIES_LOSSLESS_REASON}: {missing_reason or 'no codec model loaded'}"
        return
    slices = [s for series in group for s in series.slices]
    try:
        options = {} if quality is None else {"quality": quality}
        blobs = encoder.encode([s.frame for s in slices], bits_stored=[s.bits_stored for s in slices], **options)
        decoded = encoder.decode(blobs)
    except Exception:
        if len(group) > 1:
            for series in group:
                _encode_and_judge(settings, encoder, [series], quality)
            return
        LOG.exception("compression job %d: codec failed", group[0].job.id)
        group[0].error = "codec failed (see the worker log)"
        return
    for s, blob, pixels in zip(slices, blobs, decoded):
        s.blob = blob
        s.reason = None
    start = 0
    for series in group:
        floors = Floors.for_rule(settings.codec, series.rule)
        for s, pixels in zip(series.slices, decoded[start:start + len(series.slices)]):
            s.reason = floors.check(s.frame, pixels, len(s.blob), s.original_bytes, s.lossless_bytes).reason
        start += len(series.slices)


def _decide(series: _Series) -> tuple[str | None, list[_Slice], dict[int, str]]:
    """(decision to record, slices to swap, fallback reason per kept-lossless instance)."""
    if series.lossless_reason is not None:
        reasons = {s.instance_pk: series.lossless_reason for s in series.slices}
        return "lossless", [], reasons
    failing = [s for s in series.slices if s.reason]
    if not failing:
        return "lossy", list(series.slices), {}
    if series.job.decision == "lossy":  # a late slice of a lossy series: it alone stays lossless
        LOG.warning("series of job %d is now mixed: %d late slice(s) missed a floor and stay lossless",
                    series.job.id, len(failing))
        return None, [s for s in series.slices if not s.reason], {s.instance_pk: str(s.reason) for s in failing}
    first = failing[0]
    others = f"{SERIES_LOSSLESS_REASON}: slice {first.sop_instance_uid} missed a floor ({first.reason})"
    return "lossless", [], {s.instance_pk: s.reason or others for s in series.slices}


def _commit(database: Database, settings: Settings, encoders: EncoderSource, owner: str,
            series: _Series) -> RunReport:
    """Step 4: one transaction per series (or the job's failure record)."""
    report = RunReport(jobs=1)
    retry_after = min(300.0, 10.0 * (series.job.attempts + 1))  # back off
    if series.error is not None:
        with database.session() as session:
            failed = jobs.record_failure(session, series.job, owner, series.error,
                                         max_attempts=settings.compression.max_attempts, retry_after_s=retry_after)
        report.failed_jobs = int(failed)
        return report
    decision, swap, keep = _decide(series)
    encoder = encoders.encoder_for(series.rule.model) if (swap and series.rule) else None
    try:
        with database.session() as session:
            # Lock order as in ingest (instance rows, then the job row), so a re-send during a swap waits
            # instead of deadlocking with it.
            _lock_instances(session, [s.instance_pk for s in series.slices])
            row = jobs.lock_own(session, series.job, owner)
            if row is None:
                LOG.warning("compression job %d: lease lost to another worker; its result is discarded",
                            series.job.id)
                report.lost_leases = 1
                return report
            swapped, saved = _swap(session, swap, encoder, settings) if swap else ([], 0)
            kept = _keep_lossless(session, series.slices, keep)
            jobs.finish(row, decision=decision, compressed=len(swapped), saved_bytes=saved)
    except Exception as exc:
        LOG.exception("compression job %d: swap failed", series.job.id)
        with database.session() as session:
            failed = jobs.record_failure(session, series.job, owner, f"swap failed: {type(exc).__name__}: {exc}",
                                         max_attempts=settings.compression.max_attempts, retry_after_s=retry_after)
        report.failed_jobs = int(failed)
        return report
    report.compressed, report.kept_lossless, report.saved_bytes = len(swapped), kept, saved
    for s in series.slices:
        if s.instance_pk in keep:
            LOG.warning("instance %s stored losslessly instead of by the CAE: %s", s.sop_instance_uid,
                        keep[s.instance_pk])
    LOG.info("compression job %d (rule %r): %d slice(s) stored lossy, %d kept lossless, %d bytes saved",
             series.job.id, series.job.rule, len(swapped), kept, saved)
    return report


def _unchanged(inst: Instance | None, s: _Slice) -> bool:
    """Still the lossless copy this run read (not re-sent, not already compressed by another run)."""
    return (inst is not None and inst.storage == "lossless" and inst.fallback_reason is None
            and inst.received_at == s.received_at)


def _lock_instances(session: Session, instance_pks: list[int]) -> None:
    if instance_pks:
        session.execute(select(Instance.id).where(Instance.id.in_(instance_pks)).order_by(Instance.id)
                        .with_for_update())


def _lock_instance(session: Session, instance_pk: int) -> Instance | None:
    return session.scalars(select(Instance).where(Instance.id == instance_pk).with_for_update()).one_or_none()


def _swap(session: Session, slices: list[_Slice], encoder: Encoder | None,
          settings: Settings) -> tuple[list[_Slice], int]:
    """Replace lossless blobs by the verified lossy ones; read them back before the caller commits."""
    if encoder is None:
        raise RuntimeError("no encoder for the rule's model")
    _ensure_codec_model(session, encoder)
    swapped, saved = [], 0
    for s in slices:
        inst = _lock_instance(session, s.instance_pk)
        if not _unchanged(inst, s):
            continue
        assert inst is not None
        blob = session.get(InstanceBlob, s.instance_pk)
        assert blob is not None
        blob.pixel_blob = s.blob
        inst.storage, inst.codec_model_id = "cae", encoder.model_id
        inst.derived_sop_instance_uid = str(derive_lossy_uid(inst.sop_instance_uid, encoder.model_id))
        inst.stored_pixel_bytes = len(s.blob)
        swapped.append(s)
        saved += s.lossless_bytes - len(s.blob)
    session.flush()
    if swapped:  # what will commit is exactly what was decoded and measured
        stored = dict(session.execute(select(InstanceBlob.instance_pk, InstanceBlob.pixel_blob)
                                      .where(InstanceBlob.instance_pk.in_([s.instance_pk for s in swapped]))).all())
        for s in swapped:
            if bytes(stored.get(s.instance_pk) or b"") != s.blob:
                raise RuntimeError(f"read-back of instance {s.sop_instance_uid} differs from the verified blob")
    return swapped, saved


def _keep_lossless(session: Session, slices: list[_Slice], reasons: dict[int, str]) -> int:
    """Record why these instances stay lossless (they are then no longer candidates)."""
    kept = 0
    for s in slices:
        if s.instance_pk not in reasons:
            continue
        inst = _lock_instance(session, s.instance_pk)
        if _unchanged(inst, s):
            assert inst is not None
            inst.fallback_reason = reasons[s.instance_pk][:2000]
            kept += 1
    return kept


def _ensure_codec_model(session: Session, encoder: Encoder) -> None:
    """The model's row (old blobs stay attributable); concurrent workers may insert it at the same time."""
    if session.get(CodecModel, encoder.model_id) is not None:
        return
    codec = getattr(encoder, "codec", encoder)
    card = getattr(codec, "card", None)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(CodecModel.__table__).values(
        model_id=encoder.model_id, sha256=encoder.weights_sha256,
        architecture=str(getattr(card, "architecture", "") or ""),
        first_used=datetime.now().astimezone()).on_conflict_do_nothing())


__all__ = ["SERIES_LOSSLESS_REASON", "Encoder", "EncoderSource", "RunReport", "compress_claimed"]
