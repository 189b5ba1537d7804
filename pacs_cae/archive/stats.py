"""What the archive holds and what the codec saves: the figures behind ``pacs-cae stats``.

``original`` bytes are the Pixel Data as received; ``stored`` bytes are what the database keeps for the same
instances (pixel blobs + compressed metadata). ``ratio`` = original / stored, ``pixel_ratio`` = original /
pixel blobs (None where a denominator is 0).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from pacs_cae.store import jobs
from pacs_cae.store.rejections import rejection_counts
from pacs_cae.store.repository import QUALITY_GATE_REASON
from pacs_cae.store.schema import Instance, Patient, Series, Study

_SUMS = (
    func.count(Instance.id),
    func.coalesce(func.sum(Instance.original_pixel_bytes), 0),
    func.coalesce(func.sum(Instance.stored_pixel_bytes), 0),
    func.coalesce(func.sum(Instance.metadata_bytes), 0),
)


def collect(session: Session) -> dict[str, Any]:
    """All figures as a JSON-ready dict (see docs/configuration.md, "pacs-cae stats")."""
    totals = _figures(*session.execute(select(*_SUMS)).one())
    stats: dict[str, Any] = {
        "patients": session.scalar(select(func.count(Patient.id))),
        "studies": session.scalar(select(func.count(Study.id))),
        "series": session.scalar(select(func.count(Series.id))),
        **totals,
        "by_storage": _grouped(
            session, select(Instance.storage, Instance.codec_model_id, *_SUMS), ("storage", "model"),
            (Instance.storage, Instance.codec_model_id),
        ),
        "by_modality": _grouped(
            session, select(Series.modality, *_SUMS).join(Series, Series.id == Instance.series_pk),
            ("modality",), (Series.modality,),
        ),
        "fallbacks": _fallbacks(session),
        "compression": jobs.backlog(session),  # the deferred-compression backlog (pacs_cae/store/jobs.py)
        "rejected": _rejected(session),
    }
    oldest, newest = session.execute(select(func.min(Study.study_date), func.max(Study.study_date))).one()
    stats["oldest_study_date"], stats["newest_study_date"] = oldest, newest
    return stats


def _figures(instances: int, original: int, stored_pixel: int, metadata: int) -> dict[str, Any]:
    original, stored_pixel, metadata = int(original), int(stored_pixel), int(metadata)
    stored = stored_pixel + metadata
    return {
        "instances": int(instances),
        "original_bytes": original,
        "stored_bytes": stored,
        "stored_pixel_bytes": stored_pixel,
        "metadata_bytes": metadata,
        "ratio": round(original / stored, 3) if stored else None,
        "pixel_ratio": round(original / stored_pixel, 3) if stored_pixel else None,
    }


def _grouped(session: Session, stmt: Select, names: tuple[str, ...], group_by: tuple[Any, ...]) -> list[dict]:
    rows = session.execute(stmt.group_by(*group_by)).all()
    out = [{**dict(zip(names, row[: len(names)])), **_figures(*row[len(names):])} for row in rows]
    return sorted(out, key=lambda d: tuple(str(d[n] or "") for n in names))


def _fallbacks(session: Session) -> dict[str, Any]:
    """Eligible slices stored losslessly instead, by reason (the part before the first ':')."""
    by_reason: dict[str, int] = {}
    rows = session.execute(
        select(Instance.fallback_reason, func.count(Instance.id))
        .where(Instance.fallback_reason.is_not(None))
        .group_by(Instance.fallback_reason)
    ).all()
    for reason, n in rows:
        head = str(reason).split(":", 1)[0].strip() or "unspecified"  # NULLs are filtered out above
        by_reason[head] = by_reason.get(head, 0) + int(n)
    return {
        "total": sum(by_reason.values()),
        "quality_gate": by_reason.get(QUALITY_GATE_REASON, 0),
        "by_reason": dict(sorted(by_reason.items())),
    }


def _rejected(session: Session) -> dict[str, Any]:
    """Received instances refused (patient conflict, incomplete data, ...) or not stored (changed re-send)."""
    by_reason = rejection_counts(session)
    return {"total": sum(by_reason.values()), "by_reason": by_reason}


__all__ = ["collect"]
