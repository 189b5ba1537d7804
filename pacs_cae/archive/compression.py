"""Deferred compression of claimed series: decode the lossless copies, encode in batches, judge, swap.

One run takes the jobs a worker claimed (:func:`pacs_cae.store.jobs.claim`), and for each series:

1. reads the index values and metadata of the instances still stored losslessly (and not already kept
   lossless by a decision) and checks the codec can take every one (:func:`compression_rules.eligible`);
2. reads, rebuilds exactly, encodes and decodes again the slices of *all* claimed series of one model in
   chunks of ``codec.chunk_slices`` (across series; ``codec.batch_size`` slices per forward), so only a chunk
   of frames is in memory at a time; for a copy C-STORE wrote verbatim, it measures the size of its fast
   lossless coding (what ``require_gain`` compares with) without storing it - a slice that goes lossy never
   needs it;
3. judges every slice against the floors (:class:`pacs_cae.archive.floors.Floors`); a series' first miss
   settles it (it stays lossless), so its remaining slices are not encoded;
4. per series, in **one transaction**: re-checks the lease and that each instance is unchanged since step 1,
   writes the lossy blobs and index fields, reads the blobs back and compares them with the bytes that were
   decoded and measured, then records the job done. The lossless copy disappears only with that commit.

Series-level decision: if any slice misses a floor (or cannot be encoded), no slice of the series is stored
lossy, and the job remembers ``decision = "lossless"`` so later arrivals follow it. A series decided
``"lossy"`` that receives a late slice tries that slice alone; if it misses a floor it stays lossless (the
only way a series becomes mixed, logged as a warning) - a lossy slice is never made from a failing one.

Error bound (``max_abs_error = δ``, from ``[codec]`` or the rule, the tighter wins): a model that supports
a bound (:func:`supports_bound`) encodes with δ, so every pixel is within δ by construction, and the decoded
slice is still measured against every floor before the swap; for other models δ is a measured floor only.
δ = 0 with such a model is the **learned lossless tier**: its streams are exact, so they are no lossy copy
but one more exact coding - each slice keeps whichever exact coding is smallest (below), and stays
``lossless``, served as the original.

A series no rule compresses has a :data:`~pacs_cae.archive.compression_rules.LOSSLESS_JOB`: the worker's
repack (:mod:`pacs_cae.archive.repack`, with ``codec.lossless_methods``) re-codes its verbatim copies in their
smallest exact coding before this module runs; here it only finishes the job, deciding nothing. A job whose
rule was removed or no longer compresses is repacked the same way.

Lossless re-coding: every slice a run keeps lossless (a floor missed, δ = 0, not eligible) that is still
C-STORE's verbatim copy gets its fast exact coding (JPEG-LS), and, where ``codec.lossless_methods`` names more
(or δ = 0 gives a learned stream), the smallest of those, by :func:`pacs_cae.codec.lossless.encode_lossless`,
which keeps per frame the smallest stream that decodes to exactly the received bytes; the new blob is decoded
once more and compared with the received bytes before it replaces the stored copy in the same transaction as
the decision, and only when it is smaller.

Idempotent: an instance is swapped only when it is still ``lossless`` with the same ``received_at``, so a
job run twice (a lease that expired under a slow worker) changes nothing the second time.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, cast

import numpy as np
from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pacs_cae.archive.compression_rules import LOSSLESS_JOB, eligible, find_rule
from pacs_cae.archive.floors import Floors
from pacs_cae.archive.received import lossless_layout
from pacs_cae.archive.repack import repack
from pacs_cae.codec.base import SliceCodec
from pacs_cae.codec.errors import CodecError
from pacs_cae.codec.lossless import (
    FAST_METHODS,
    LearnedCandidate,
    PixelLayout,
    decode_lossless,
    encode_lossless,
    frame_methods,
    is_verbatim,
    lossless_size,
)
from pacs_cae.config import CompressionRule, Settings
from pacs_cae.dicom.metadata import decode_metadata
from pacs_cae.dicom.pixels import extract_frames
from pacs_cae.dicom.rebuild import rebuild_lossless
from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.store import jobs
from pacs_cae.store.db import Database
from pacs_cae.store.jobs import ClaimedJob
from pacs_cae.store.schema import CodecModel, Instance, InstanceBlob
from pacs_cae.vocabulary import StorageKind

LOG = logging.getLogger(__name__)

#: ``fallback_reason`` prefix of slices kept lossless because another slice of their series missed a floor.
SERIES_LOSSLESS_REASON = "series-lossless"
#: What a slice holds instead of its frame once judged (or when it has none): frames are most of a run's memory.
_NO_FRAME = np.empty(0, dtype=np.uint16)
#: ``fallback_reason`` prefix of slices stored exactly because their rule asks for ``max_abs_error = 0``.
EXACT_REASON = "exact"


class EncoderSource(Protocol):
    """Gives the codec of a rule's model ("" = the configured ``codec.model``); None = no model."""

    def encoder_for(self, model: str) -> SliceCodec | None: ...

    def missing_reason(self, model: str) -> str | None:
        """Why ``encoder_for(model)`` gave None, when there is more to say than "no model loaded"."""
        ...


@dataclass
class _Slice:
    instance_pk: int
    sop_instance_uid: str
    received_at: datetime
    bits_stored: int
    original_bytes: int  # the slice at BitsAllocated, what the compression ratio is measured against
    lossless_bytes: int  # what a lossy blob must beat: the stored blob, or a verbatim copy's fast coding (_baseline)
    stored_bytes: int  # the stored lossless blob
    verbatim: bool  # the stored blob is C-STORE's verbatim copy: a kept slice is re-coded (_recode_kept)
    layout: PixelLayout | None = None
    frame: np.ndarray = field(default_factory=lambda: _NO_FRAME)  # only while its chunk is coded (_load_frames)
    changed: bool = False  # re-sent or changed since the series was read: left to the job's next run
    blob: bytes = b""
    reason: str | None = None
    exact: LearnedCandidate | None = None  # a verified δ = 0 learned stream, a candidate exact coding
    recoded: bytes | None = None  # a smaller exact blob than the stored one, verified


@dataclass
class _Series:
    job: ClaimedJob
    rule: CompressionRule | None
    plan: Plan | None = None  # how the rule's model encodes the series (None: no rule compresses it)
    slices: list[_Slice] = field(default_factory=list)
    lossless_reason: str | None = None  # the series stays lossless (decided before encoding)
    error: str | None = None  # the run failed (retried later)
    exact: bool = False  # encoded at max_abs_error = 0: every slice stays lossless in its smallest coding

    @property
    def stale(self) -> bool:
        """The job's rule was removed, or no longer compresses: nothing to encode (re-coded as a LOSSLESS_JOB)."""
        return not self.by_policy and (self.rule is None or not self.rule.compress)

    @property
    def by_policy(self) -> bool:
        """A LOSSLESS_JOB: nothing to encode or decide (the worker's repack re-coded the series)."""
        return self.job.rule == LOSSLESS_JOB


@dataclass(frozen=True)
class Plan:
    """How a rule's series are encoded: model, operating point, and the error bound given to the codec."""

    model: str
    quality: int | None
    bound: int | None  # δ the codec guarantees (None: no bound asked, or the model has none)


def supports_bound(encoder: SliceCodec | None) -> bool:
    """Whether the encoder (or the codec behind a batcher) guarantees ``max_abs_error`` by construction."""
    return encoder is not None and encoder.supports_max_abs_error


def plan_for(settings: Settings, rule: CompressionRule, encoder: SliceCodec | None) -> Plan:
    """δ: the tighter of ``[codec]``'s and the rule's ``max_abs_error``, rounded down to whole stored levels,
    when the model can guarantee it (then δ alone chooses the operating point); else the rule's quality (else
    ``codec.quality`` for the configured model, else the model's default)."""
    limit = Floors.for_rule(settings.codec, rule).max_abs_error
    if limit is not None and encoder is not None and encoder.supports_max_abs_error:
        delta = math.floor(limit)
        try:
            encoder.check_max_abs_error(delta)
            return Plan(rule.model, None, delta)
        except CodecError as exc:  # beyond what the model can promise: a measured floor, as for any model
            LOG.warning("rule %r: %s; max_abs_error stays a measured floor", rule.name, exc)
    quality = rule.quality
    if quality is None and rule.model in ("", settings.codec.model):
        quality = settings.codec.quality
    return Plan(rule.model, quality, None)


@dataclass
class RunReport:
    """What one run did (the worker's progress bar and logs)."""

    jobs: int = 0
    compressed: int = 0
    kept_lossless: int = 0
    recoded: int = 0  # verbatim copies of series no rule compresses, re-coded exactly (lossless jobs)
    saved_bytes: int = 0
    failed_jobs: int = 0
    lost_leases: int = 0

    @property
    def instances(self) -> int:
        return self.compressed + self.kept_lossless + self.recoded

    def add(self, other: RunReport) -> None:
        for name in ("jobs", "compressed", "kept_lossless", "recoded", "saved_bytes", "failed_jobs", "lost_leases"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def compress_claimed(database: Database, settings: Settings, encoders: EncoderSource, owner: str,
                     claimed: list[ClaimedJob]) -> RunReport:
    """Process the jobs ``owner`` claimed; every job ends done, pending again, or failed with its reason."""
    work = [_prepare(database, settings, encoders, job) for job in claimed]
    by_plan: dict[Plan, list[_Series]] = defaultdict(list)
    for series in work:
        if series.error is None and series.lossless_reason is None and series.plan is not None and series.slices:
            by_plan[series.plan].append(series)
    for plan, group in by_plan.items():
        encoder = encoders.encoder_for(plan.model)
        _encode_and_judge(database, settings, encoder, group, plan,
                          encoders.missing_reason(plan.model) if encoder is None else None)
    decided = [_decide(series) for series in work]
    for series, (_, _, keep) in zip(work, decided):
        if series.error is None:
            _recode_kept(database, settings, encoders, series, keep)
    with database.session() as session:
        jobs.renew(session, claimed, owner, settings.compression.lease_s)
    report = RunReport()
    # a rule removed, or now lossless, since the job was made: its verbatim copies get their final exact coding
    report.recoded = repack(database, [s.job.series_pk for s in work if s.stale],
                            brotli_quality=settings.codec.brotli_quality, methods=settings.codec.lossless_methods)
    for series, decision in zip(work, decided):
        report.add(_commit(database, settings, encoders, owner, series, decision))
    return report


def _recode_kept(database: Database, settings: Settings, encoders: EncoderSource, series: _Series,
                 keep: dict[int, str]) -> None:
    """The smallest verified exact blob of each slice this run keeps lossless, where smaller than the stored
    one (CPU work, done before the transaction; the swap itself is in :func:`_keep_lossless`).

    A verbatim copy (C-STORE's) always gets one: at least its fast coding, what the worker's repack gives a
    series no rule compresses. A copy already in the fast coding only when other methods, or the exact tier,
    can beat it. The received bytes are read again here, a series at a time, not kept from the judging.
    """
    better = _beyond_fast(settings)
    decoder = encoders.encoder_for(series.rule.model) if series.exact and series.rule is not None else None
    todo = [s for s in series.slices if s.instance_pk in keep and not s.changed
            and (s.verbatim or better or s.exact is not None)]
    received = _read_received(database, {s.instance_pk for s in todo}) if todo else {}
    for s in todo:
        if s.instance_pk not in received:
            continue  # re-sent or swapped meanwhile: _keep_lossless skips it too
        raw, s.verbatim = received[s.instance_pk]
        if not s.verbatim:
            s.lossless_bytes = s.stored_bytes
        methods = _recode_methods(settings, s)
        if not methods:
            continue  # already in its final coding
        try:
            blob = encode_lossless(raw, s.layout, brotli_quality=settings.codec.brotli_quality,
                                   methods=methods, learned=s.exact)
            if len(blob) >= s.stored_bytes:
                continue
            if decode_lossless(blob, learned=decoder.decode if decoder else None) != raw:
                LOG.error("instance %s: re-coded lossless blob does not decode to the received bytes; the "
                          "stored copy stays", s.sop_instance_uid)
                continue
            if s.verbatim and not s.lossless_bytes:
                s.lossless_bytes = _baseline(settings, s, raw, blob, methods)
        except Exception:
            LOG.exception("instance %s: lossless re-coding failed; the stored copy stays", s.sop_instance_uid)
            continue
        s.recoded = blob


def _recode_methods(settings: Settings, s: _Slice) -> tuple[str, ...]:
    """The exact codings tried for a kept slice: ``codec.lossless_methods`` (re-coding), and for a verbatim copy
    the fast one as well (so it ends no larger than a repack would make it)."""
    methods = tuple(settings.codec.lossless_methods) if (_beyond_fast(settings) or s.exact) else ()
    return tuple(dict.fromkeys(methods + (FAST_METHODS if s.verbatim else ())))


def _baseline(settings: Settings, s: _Slice, raw: bytes, blob: bytes, methods: tuple[str, ...]) -> int:
    """A verbatim copy's fast-coding size: what "saved" bytes and ``require_gain`` count from, as if C-STORE
    had stored the fast coding (``blob`` is it when only the fast methods, and no learned stream, were tried)."""
    if methods == FAST_METHODS and s.exact is None:
        return len(blob)
    return lossless_size(raw, s.layout, brotli_quality=settings.codec.brotli_quality)


def _read_received(database: Database, instance_pks: set[int]) -> dict[int, tuple[bytes, bool]]:
    """(received Pixel Data, whether stored verbatim) of these lossless instances, from their stored blobs."""
    out: dict[int, tuple[bytes, bool]] = {}
    with database.session(readonly=True) as session:
        rows = session.execute(
            select(InstanceBlob.instance_pk, InstanceBlob.pixel_blob)
            .join(Instance, Instance.id == InstanceBlob.instance_pk)
            .where(InstanceBlob.instance_pk.in_(sorted(instance_pks)), Instance.storage == StorageKind.LOSSLESS)
            .execution_options(yield_per=16))
        for pk, blob in rows:
            blob = bytes(blob or b"")
            try:
                out[pk] = decode_lossless(blob), is_verbatim(blob)
            except Exception:  # changed meanwhile (e.g. learned frames): it keeps its stored blob
                LOG.exception("instance row %d: cannot read the received pixels again; the stored copy stays", pk)
    return out


def _prepare(database: Database, settings: Settings, encoders: EncoderSource, job: ClaimedJob) -> _Series:
    """Read the index values and metadata of the series' lossless candidates (step 1); their pixels are read
    a chunk at a time, when coded (:func:`_load_frames`), so a series' frames are never all in memory."""
    if job.rule == LOSSLESS_JOB:
        return _Series(job, None)
    rule = find_rule(settings.compression, settings, job.rule)
    series = _Series(job, rule)
    if rule is None or not rule.compress:
        return series  # the rule was removed or now says lossless: nothing to do
    series.plan = plan_for(settings, rule, encoders.encoder_for(rule.model))
    try:
        with database.session(readonly=True) as session:
            rows = session.execute(
                select(Instance, InstanceBlob.metadata_blob)
                .join(InstanceBlob, InstanceBlob.instance_pk == Instance.id)
                .where(Instance.series_pk == job.series_pk, Instance.storage == StorageKind.LOSSLESS,
                       Instance.fallback_reason.is_(None))
                .order_by(Instance.instance_number, Instance.id)
                .execution_options(yield_per=64)
            )
            for inst, metadata_blob in rows:
                _add_slice(series, settings, inst, metadata_blob)
    except Exception as exc:
        LOG.exception("compression job %d: cannot read series %d", job.id, job.series_pk)
        series.error = f"cannot read stored instances: {type(exc).__name__}: {exc}"
    if series.lossless_reason is None and job.decision == "lossless" and series.slices:
        series.lossless_reason = f"{SERIES_LOSSLESS_REASON}: an earlier slice of this series missed a floor"
    return series


def _beyond_fast(settings: Settings) -> bool:
    """``codec.lossless_methods`` names codings beyond the fast one the stored copy already has."""
    return bool(set(settings.codec.lossless_methods) - set(FAST_METHODS))


def _add_slice(series: _Series, settings: Settings, inst: Instance, metadata_blob: bytes) -> None:
    """One stored instance of the series as a :class:`_Slice` (or the reason the series stays lossless), from
    its metadata: whether the codec can take it depends on its attributes only."""
    ds = rebuild_lossless(decode_metadata(metadata_blob), b"")  # the attributes; pixels come later
    layout = lossless_layout(ds)
    # a hint (verbatim blobs are the only lossless ones larger than their pixels); the blob itself decides
    verbatim = inst.stored_pixel_bytes > inst.original_pixel_bytes
    baseline = 0 if verbatim else inst.stored_pixel_bytes  # 0: not measured yet (_load_frames, _recode_kept)
    ok, why = eligible(ds, settings.codec)
    if not ok:
        series.lossless_reason = f"{SERIES_LOSSLESS_REASON}: instance {inst.sop_instance_uid} not eligible: {why}"
        series.slices.append(_Slice(inst.id, inst.sop_instance_uid, inst.received_at, 0, 0, baseline,
                                    inst.stored_pixel_bytes, verbatim, layout, reason=why))
        return
    bits_allocated = int(ds.BitsAllocated)
    series.slices.append(_Slice(
        inst.id, inst.sop_instance_uid, inst.received_at, int(ds.get("BitsStored", bits_allocated) or bits_allocated),
        int(ds.Rows) * int(ds.Columns) * max(1, (bits_allocated + 7) // 8), baseline, inst.stored_pixel_bytes,
        verbatim, layout))


def _load_frames(database: Database, settings: Settings, items: list[tuple[_Series, _Slice]], *,
                 judged: bool) -> list[tuple[_Series, _Slice]]:
    """Read and rebuild the pixels of these slices exactly (one read per chunk); returns those still stored as
    the series was read. A changed slice is left to the job's next run; a slice that cannot be read fails its
    series' run (retried later).

    A verbatim copy (C-STORE's fast path) is not repacked first: if its series goes lossy its lossless coding
    is never stored, so for a slice a floor will judge (``judged``) only its size is measured, unverified
    (:func:`lossless_size`, what ``require_gain`` compares with); one kept lossless gets its verified coding in
    :func:`_recode_kept`.
    """
    by_pk = {s.instance_pk: (series, s) for series, s in items}
    with database.session(readonly=True) as session:
        rows = session.execute(
            select(Instance.id, Instance.received_at, InstanceBlob.metadata_blob, InstanceBlob.pixel_blob)
            .join(InstanceBlob, InstanceBlob.instance_pk == Instance.id)
            .where(Instance.id.in_(sorted(by_pk)), Instance.storage == StorageKind.LOSSLESS,
                   Instance.fallback_reason.is_(None))
            .execution_options(yield_per=16))
        for pk, received_at, metadata_blob, pixel_blob in rows:
            series, s = by_pk[pk]
            if received_at != s.received_at or pixel_blob is None or series.error is not None:
                continue
            try:
                ds = rebuild_lossless(decode_metadata(metadata_blob), decode_lossless(pixel_blob))
                pixels = extract_frames(ds)
                if len(pixels.frames) != 1:
                    raise ValueError(f"{len(pixels.frames)} frames (the codec takes single-frame slices)")
                s.frame, s.verbatim = pixels.frames[0], is_verbatim(pixel_blob)
                if not s.verbatim:
                    s.lossless_bytes = s.stored_bytes
                elif judged:
                    s.lossless_bytes = lossless_size(ds.PixelData, s.layout,
                                                     brotli_quality=settings.codec.brotli_quality)
            except Exception as exc:
                LOG.exception("compression job %d: cannot read instance %s", series.job.id, s.sop_instance_uid)
                series.error = f"cannot read stored instance {s.sop_instance_uid}: {type(exc).__name__}: {exc}"
    loaded = []
    for series, s in items:
        if series.error is None and s.frame.size:
            loaded.append((series, s))
        elif series.error is None:
            s.changed = True
            LOG.info("compression job %d: instance %s changed since its series was read; left to the next run",
                     series.job.id, s.sop_instance_uid)
    return loaded


def _encode_and_judge(database: Database, settings: Settings, encoder: SliceCodec | None, group: list[_Series],
                      plan: Plan, missing_reason: str | None = None) -> None:
    """Encode and decode the slices of ``group`` and set each slice's floor reason (steps 2-3)."""
    if encoder is None:
        for series in group:
            series.lossless_reason = f"{SERIES_LOSSLESS_REASON}: {missing_reason or 'no codec model loaded'}"
        return
    if plan.bound == 0:
        _encode_exact(database, settings, encoder, group, plan)
    else:
        _encode_until_missed(database, settings, encoder, group, plan)


def _code(encoder: SliceCodec, slices: list[_Slice], plan: Plan) -> tuple[list[bytes], list[np.ndarray]]:
    """One encode call for ``slices`` at the plan's operating point, and the decode of its blobs."""
    bits = [s.bits_stored for s in slices]
    frames = [s.frame for s in slices]
    if plan.bound is not None:
        blobs = encoder.encode(frames, bits_stored=bits, max_abs_error=plan.bound)
    elif plan.quality is not None:
        blobs = encoder.encode(frames, bits_stored=bits, quality=plan.quality)
    else:
        blobs = encoder.encode(frames, bits_stored=bits)
    return blobs, encoder.decode(blobs)


def _coded(database: Database, settings: Settings, encoder: SliceCodec, group: list[_Series], plan: Plan, *,
           judged: bool, settled: set[int]) -> Iterator[tuple[_Series, _Slice, bytes, np.ndarray]]:
    """(series, slice, blob, decoded slice) for the group's slices, read, encoded and decoded in chunks of
    ``codec.chunk_slices`` (across series, in order), so only one chunk of frames is in memory.

    Series in ``settled`` (the caller may add to it between slices) are skipped; a series that cannot be read,
    or that the codec still fails on when its part of a failed chunk is retried alone, gets ``error`` and is
    added to ``settled``. Each slice's frame is released once the caller has taken it.
    """
    queue = deque((series, s) for series in group for s in series.slices)
    step = settings.codec.chunk_slices
    while queue:
        chunk: list[tuple[_Series, _Slice]] = []
        while queue and len(chunk) < step:
            item = queue.popleft()
            if id(item[0]) not in settled:
                chunk.append(item)
        chunk = _load_frames(database, settings, chunk, judged=judged) if chunk else []
        settled.update(id(series) for series in group if series.error is not None)
        try:
            parts = [(chunk, _code(encoder, [s for _, s in chunk], plan))] if chunk else []
        except Exception:
            LOG.warning("codec failed on a chunk of %d slices; retrying series by series", len(chunk),
                        exc_info=True)
            parts = []
            for series in {id(series): series for series, _ in chunk}.values():  # each series' part alone
                mine = [item for item in chunk if item[0] is series]
                try:
                    parts.append((mine, _code(encoder, [s for _, s in mine], plan)))
                except Exception:
                    LOG.exception("compression job %d: codec failed", series.job.id)
                    series.error = "codec failed (see the worker log)"
                    settled.add(id(series))
        for items, (blobs, decoded) in parts:
            for (series, s), blob, pixels in zip(items, blobs, decoded):
                yield series, s, blob, pixels
                s.frame = _NO_FRAME  # taken: only its blob is needed now (memory of a large series)


def _encode_exact(database: Database, settings: Settings, encoder: SliceCodec, group: list[_Series],
                  plan: Plan) -> None:
    """δ = 0: every slice's exact stream, a candidate coding (no floor applies; encode_lossless checks them
    bit for bit)."""
    for _, s, blob, pixels in _coded(database, settings, encoder, group, plan, judged=False, settled=set()):
        s.blob, s.reason, s.exact = blob, None, LearnedCandidate([blob], [pixels])
    for series in group:
        series.exact = series.error is None


def _encode_until_missed(database: Database, settings: Settings, encoder: SliceCodec, group: list[_Series],
                         plan: Plan) -> None:
    """Judge every slice the codec encoded and decoded (:func:`_coded`) against its floors, in order.

    A series is stored lossy only if every slice passes, so its first miss settles it: its remaining slices
    are not encoded (with floors a model rarely meets, most of a backlog is decided by its first chunk). The
    exception is a series already stored lossy: each late slice is judged alone, so all are encoded.
    """
    floors = {id(series): Floors.for_rule(settings.codec, series.rule) for series in group}
    settled: set[int] = set()  # series with a miss or an error: nothing more to encode
    for series, s, blob, pixels in _coded(database, settings, encoder, group, plan, judged=True, settled=settled):
        s.blob = blob
        s.reason = floors[id(series)].check(s.frame, pixels, len(blob), s.original_bytes, s.lossless_bytes).reason
        if s.reason and series.job.decision != "lossy":
            settled.add(id(series))


def _decide(series: _Series) -> tuple[str | None, list[_Slice], dict[int, str]]:
    """(decision to record, slices to swap, fallback reason per kept-lossless instance)."""
    if series.by_policy:  # no decision: a rule that compresses the series later starts afresh
        return None, [], {}
    if series.lossless_reason is not None:
        reasons = {s.instance_pk: series.lossless_reason for s in series.slices}
        return "lossless", [], reasons
    current = [s for s in series.slices if not s.changed]  # a changed slice is the next run's
    if series.exact:  # no decision recorded: later slices get the learned lossless tier too
        return None, [], {s.instance_pk: f"{EXACT_REASON}: max_abs_error = 0, stored losslessly" for s in current}
    failing = [s for s in current if s.reason]
    if not failing:
        return "lossy", current, {}
    if series.job.decision == "lossy":  # a late slice of a lossy series: it alone stays lossless
        LOG.warning("series of job %d is now mixed: %d late slice(s) missed a floor and stay lossless",
                    series.job.id, len(failing))
        return None, [s for s in current if not s.reason], {s.instance_pk: str(s.reason) for s in failing}
    first = failing[0]
    others = f"{SERIES_LOSSLESS_REASON}: slice {first.sop_instance_uid} missed a floor ({first.reason})"
    return "lossless", [], {s.instance_pk: s.reason or others for s in current}


def _commit(database: Database, settings: Settings, encoders: EncoderSource, owner: str,
            series: _Series, decided: tuple[str | None, list[_Slice], dict[int, str]]) -> RunReport:
    """Step 4: one transaction per series (or the job's failure record)."""
    report = RunReport(jobs=1)
    retry_after = min(300.0, 10.0 * (series.job.attempts + 1))  # back off
    if series.error is not None:
        with database.session() as session:
            failed = jobs.record_failure(session, series.job, owner, series.error,
                                         max_attempts=settings.compression.max_attempts, retry_after_s=retry_after)
        report.failed_jobs = int(failed)
        return report
    decision, swap, keep = decided
    learned = any(s.recoded and "learned" in frame_methods(s.recoded) for s in series.slices)
    encoder = encoders.encoder_for(series.rule.model) if ((swap or learned) and series.rule) else None
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
            if learned and encoder is not None:
                _ensure_codec_model(session, encoder)
            kept, recoded_saved = _keep_lossless(session, series.slices, keep, encoder.model_id if encoder else None)
            saved += recoded_saved
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
        if s.instance_pk in keep and not series.exact:  # exact is what a δ = 0 rule asked for
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


def _swap(session: Session, slices: list[_Slice], encoder: SliceCodec | None,
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
        inst.storage, inst.codec_model_id = StorageKind.CAE.value, encoder.model_id
        inst.derived_sop_instance_uid = str(derive_lossy_uid(inst.sop_instance_uid, encoder.model_id))
        inst.stored_pixel_bytes = len(s.blob)
        swapped.append(s)
        saved += s.lossless_bytes - len(s.blob)
    _read_back(session, {s.instance_pk: (s.sop_instance_uid, s.blob) for s in swapped})
    return swapped, saved


def _read_back(session: Session, written: dict[int, tuple[str, bytes]]) -> None:
    """What will commit is exactly the blob that was decoded and verified (instance pk -> (UID, blob))."""
    session.flush()
    if not written:
        return
    stored = dict(session.execute(select(InstanceBlob.instance_pk, InstanceBlob.pixel_blob)
                                  .where(InstanceBlob.instance_pk.in_(list(written)))).all())
    for pk, (uid, blob) in written.items():
        if bytes(stored.get(pk) or b"") != blob:
            raise RuntimeError(f"read-back of instance {uid} differs from the verified blob")


def _keep_lossless(session: Session, slices: list[_Slice], reasons: dict[int, str],
                   model_id: str | None) -> tuple[int, int]:
    """Record why these instances stay lossless (they are then no longer candidates) and store their
    re-coded exact blobs; (instances kept, bytes saved by re-coding). ``model_id``: the model of any learned
    (δ = 0) frames, recorded on the instance so ``verify`` and the model registry know it is referenced."""
    kept = saved = 0
    recoded = []
    for s in slices:
        if s.instance_pk not in reasons:
            continue
        inst = _lock_instance(session, s.instance_pk)
        if _unchanged(inst, s):
            assert inst is not None
            inst.fallback_reason = reasons[s.instance_pk][:2000]
            kept += 1
            if s.recoded is not None:
                blob = session.get(InstanceBlob, s.instance_pk)
                assert blob is not None
                blob.pixel_blob = s.recoded
                inst.stored_pixel_bytes = len(s.recoded)
                if "learned" in frame_methods(s.recoded):
                    inst.codec_model_id = model_id
                saved += s.lossless_bytes - len(s.recoded)
                recoded.append(s)
    _read_back(session, {s.instance_pk: (s.sop_instance_uid, s.recoded) for s in recoded if s.recoded is not None})
    return kept, saved


def _ensure_codec_model(session: Session, encoder: SliceCodec) -> None:
    """The model's row (old blobs stay attributable); concurrent workers may insert it at the same time."""
    if session.get(CodecModel, encoder.model_id) is not None:
        return
    card = encoder.card
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(cast(Table, CodecModel.__table__)).values(
        model_id=encoder.model_id, sha256=encoder.weights_sha256,
        architecture=card.architecture if card is not None else "",
        first_used=datetime.now().astimezone()).on_conflict_do_nothing())


__all__ = ["EXACT_REASON", "SERIES_LOSSLESS_REASON", "EncoderSource", "Plan", "RunReport",
           "compress_claimed", "plan_for", "supports_bound"]
