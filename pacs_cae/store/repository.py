"""Writes and bulk reads the ingest and retrieve use cases need; no DICOM networking here.

Re-sent instances never create a second row: ``sop_instance_uid`` (and the study/series UIDs, and the
patient's (ID, issuer)) are UNIQUE, the instance row is locked while a re-send is applied, and a unit of work
that loses an insert race to a concurrent association (IntegrityError) is retried inside a savepoint, where it
then finds the winner's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pacs_cae.store.record import InstanceRecord
from pacs_cae.store.schema import STORAGE_KINDS, CodecModel, Instance, InstanceBlob, Patient, Series, Study, utcnow

DuplicatePolicy = Literal["replace", "keep-first"]
UpsertResult = Literal["stored", "replaced", "kept-first"]

#: ``fallback_reason`` prefix for slices the quality gate sent to lossless storage (counted by ``stats``).
QUALITY_GATE_REASON = "quality-gate"

_MAX_ATTEMPTS = 5

_PATIENT_FIELDS = ("patient_name", "birth_date", "sex")
_STUDY_FIELDS = (
    "study_date", "study_time", "accession_number", "study_id", "referring_physician_name", "study_description",
)
_SERIES_FIELDS = (
    "modality", "series_number", "series_description", "body_part_examined", "series_date", "series_time",
    "protocol_name",
)
_INSTANCE_FIELDS = (
    "derived_sop_instance_uid", "sop_class_uid", "instance_number", "content_date", "content_time",
    "transfer_syntax_uid", "rows", "columns", "bits_allocated", "bits_stored", "pixel_representation",
    "photometric_interpretation", "number_of_frames", "storage", "codec_model_id", "fallback_reason",
    "original_pixel_bytes", "calling_aet",
)


def upsert_instance(
    session: Session,
    record: InstanceRecord,
    metadata_blob: bytes,
    pixel_blob: bytes | None,
    policy: DuplicatePolicy = "replace",
) -> UpsertResult:
    """Store one instance and its patient/study/series rows; flushes, the caller's unit of work commits.

    A SOP Instance UID already archived is replaced (``"replace"``: new attributes and blobs, same row id) or
    left alone (``"keep-first"``). Patient, study and series attributes follow the latest instance received
    (non-empty values only); a study or series that arrives under a different parent is moved there.
    """
    if policy not in ("replace", "keep-first"):
        raise ValueError(f"unknown duplicate policy {policy!r}")
    if record.storage not in STORAGE_KINDS:
        raise ValueError(f"unknown storage kind {record.storage!r}")
    if record.storage == "cae" and not record.codec_model_id:
        raise ValueError("a 'cae' instance must name its codec model")
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            with session.begin_nested():
                return _upsert(session, record, metadata_blob, pixel_blob, policy)
        except IntegrityError:
            if attempt == _MAX_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _upsert(
    session: Session, record: InstanceRecord, metadata_blob: bytes, pixel_blob: bytes | None, policy: str
) -> UpsertResult:
    existing = session.scalars(
        select(Instance).where(Instance.sop_instance_uid == record.sop_instance_uid).with_for_update()
    ).one_or_none()
    if existing is not None and policy == "keep-first":
        return "kept-first"
    if record.codec_model_id:
        _ensure_codec_model(session, record)
    series = _series_for(session, record)
    values = {name: getattr(record, name) for name in _INSTANCE_FIELDS}
    values.update(
        stored_pixel_bytes=len(pixel_blob) if pixel_blob is not None else 0,
        metadata_bytes=len(metadata_blob),
        received_at=utcnow(),
    )
    if existing is None:
        instance = Instance(sop_instance_uid=record.sop_instance_uid, series_pk=series.id, **values)
        session.add(instance)
        session.flush()
        session.add(InstanceBlob(instance_pk=instance.id, metadata_blob=metadata_blob, pixel_blob=pixel_blob))
        session.flush()
        return "stored"
    old_series_pk = existing.series_pk
    for name, value in values.items():
        setattr(existing, name, value)
    existing.series_pk = series.id
    blob = session.get(InstanceBlob, existing.id)
    if blob is None:
        session.add(InstanceBlob(instance_pk=existing.id, metadata_blob=metadata_blob, pixel_blob=pixel_blob))
    else:
        blob.metadata_blob, blob.pixel_blob = metadata_blob, pixel_blob
    session.flush()
    if old_series_pk != series.id:
        _drop_if_empty(session, old_series_pk)
    return "replaced"


def _ensure_codec_model(session: Session, record: InstanceRecord) -> None:
    if session.get(CodecModel, record.codec_model_id) is None:
        session.add(
            CodecModel(
                model_id=record.codec_model_id,
                sha256=record.codec_sha256 or "",
                architecture=record.codec_architecture or "",
            )
        )
        session.flush()


def _series_for(session: Session, record: InstanceRecord) -> Series:
    """Get or create the patient, study and series rows for ``record``, updating their attributes."""
    patient = session.scalars(
        select(Patient).where(Patient.patient_id == record.patient_id, Patient.issuer == record.issuer)
    ).one_or_none()
    if patient is None:
        patient = Patient(patient_id=record.patient_id, issuer=record.issuer)
        session.add(patient)
    _update(patient, record, _PATIENT_FIELDS)
    session.flush()

    study = session.scalars(
        select(Study).where(Study.study_instance_uid == record.study_instance_uid)
    ).one_or_none()
    moved_from_patient = None
    if study is None:
        study = Study(study_instance_uid=record.study_instance_uid, patient_pk=patient.id)
        session.add(study)
    elif study.patient_pk != patient.id:
        moved_from_patient, study.patient_pk = study.patient_pk, patient.id
    _update(study, record, _STUDY_FIELDS)
    session.flush()

    series = session.scalars(
        select(Series).where(Series.series_instance_uid == record.series_instance_uid)
    ).one_or_none()
    moved_from_study = None
    if series is None:
        series = Series(series_instance_uid=record.series_instance_uid, study_pk=study.id)
        session.add(series)
    elif series.study_pk != study.id:
        moved_from_study, series.study_pk = series.study_pk, study.id
    _update(series, record, _SERIES_FIELDS)
    session.flush()

    if moved_from_study is not None:
        _drop_study_if_empty(session, moved_from_study)
    if moved_from_patient is not None:
        _drop_patient_if_empty(session, moved_from_patient)
    return series


def _update(row: object, record: InstanceRecord, fields: Sequence[str]) -> None:
    for name in fields:
        value = getattr(record, name)
        if value is not None and getattr(row, name) != value:
            setattr(row, name, value)


def _drop_if_empty(session: Session, series_pk: int) -> None:
    """Remove a series (and then its study and patient) that a replaced instance left empty."""
    if session.scalar(select(func.count()).where(Instance.series_pk == series_pk)):
        return
    series = session.get(Series, series_pk)
    if series is None:
        return
    study_pk = series.study_pk
    session.delete(series)
    session.flush()
    _drop_study_if_empty(session, study_pk)


def _drop_study_if_empty(session: Session, study_pk: int) -> None:
    if session.scalar(select(func.count()).where(Series.study_pk == study_pk)):
        return
    study = session.get(Study, study_pk)
    if study is None:
        return
    patient_pk = study.patient_pk
    session.delete(study)
    session.flush()
    _drop_patient_if_empty(session, patient_pk)


def _drop_patient_if_empty(session: Session, patient_pk: int) -> None:
    if session.scalar(select(func.count()).where(Study.patient_pk == patient_pk)):
        return
    patient = session.get(Patient, patient_pk)
    if patient is not None:
        session.delete(patient)
        session.flush()


@dataclass(frozen=True)
class StoredInstance:
    """One instance's index values and bytes, detached from any session (what retrieve decodes)."""

    id: int
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    derived_sop_instance_uid: str | None
    sop_class_uid: str
    transfer_syntax_uid: str
    storage: str
    codec_model_id: str | None
    fallback_reason: str | None
    rows: int | None
    columns: int | None
    bits_allocated: int | None
    bits_stored: int | None
    pixel_representation: int | None
    photometric_interpretation: str | None
    number_of_frames: int | None
    original_pixel_bytes: int
    stored_pixel_bytes: int
    metadata_bytes: int
    metadata_blob: bytes
    pixel_blob: bytes | None


def load_instance_rows(session: Session, ids: Sequence[int]) -> list[StoredInstance]:
    """The instances with these row ids, in the order given; ids no longer in the database are skipped."""
    if not ids:
        return []
    rows = session.execute(
        select(Instance, InstanceBlob, Series.series_instance_uid, Study.study_instance_uid)
        .join(InstanceBlob, InstanceBlob.instance_pk == Instance.id)
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
        .where(Instance.id.in_(list(ids)))
    ).all()
    by_id = {
        inst.id: StoredInstance(
            id=inst.id,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            sop_instance_uid=inst.sop_instance_uid,
            derived_sop_instance_uid=inst.derived_sop_instance_uid,
            sop_class_uid=inst.sop_class_uid,
            transfer_syntax_uid=inst.transfer_syntax_uid,
            storage=inst.storage,
            codec_model_id=inst.codec_model_id,
            fallback_reason=inst.fallback_reason,
            rows=inst.rows,
            columns=inst.columns,
            bits_allocated=inst.bits_allocated,
            bits_stored=inst.bits_stored,
            pixel_representation=inst.pixel_representation,
            photometric_interpretation=inst.photometric_interpretation,
            number_of_frames=inst.number_of_frames,
            original_pixel_bytes=inst.original_pixel_bytes,
            stored_pixel_bytes=inst.stored_pixel_bytes,
            metadata_bytes=inst.metadata_bytes,
            metadata_blob=blob.metadata_blob,
            pixel_blob=blob.pixel_blob,
        )
        for inst, blob, series_uid, study_uid in rows
    }
    return [by_id[i] for i in ids if i in by_id]


__all__ = [
    "DuplicatePolicy",
    "QUALITY_GATE_REASON",
    "StoredInstance",
    "UpsertResult",
    "load_instance_rows",
    "upsert_instance",
]
