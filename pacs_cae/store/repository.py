"""Writes and bulk reads the ingest and retrieve use cases need; no DICOM networking here.

Re-sent instances never create a second row: ``sop_instance_uid`` (and the study/series UIDs, and the
patient's (ID, issuer)) are UNIQUE, the instance row is locked while a re-send is applied, and a unit of work
that loses an insert race to a concurrent association (IntegrityError) is retried inside a savepoint, where it
then finds the winner's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pacs_cae.store.record import InstanceRecord
from pacs_cae.store.schema import (
    STORAGE_KINDS,
    CodecModel,
    Instance,
    InstanceBlob,
    Patient,
    Series,
    Study,
    utcnow,
)
from pacs_cae.vocabulary import DuplicatePolicy, StorageKind

#: "stored" new; "replaced" a re-send overwrote it (policy replace); "identical" a byte-identical re-send
#: (nothing written); "kept-first" a re-send with other content (nothing written, the first copy stays).
UpsertResult = Literal["stored", "replaced", "identical", "kept-first"]

#: ``fallback_reason`` prefix for slices the quality gate sent to lossless storage (counted by ``stats``).
QUALITY_GATE_REASON = "quality-gate"

#: Patient attributes a site may add to the identity check (Patient ID and its issuer are always compared).
IDENTITY_ATTRIBUTES = {"PatientName": "patient_name", "PatientBirthDate": "birth_date", "PatientSex": "sex"}

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


class HierarchyConflict(ValueError):
    """The instance names a patient, study or series that contradicts what is stored; nothing was written.

    ``reason`` is ``"patient-conflict"`` (the study belongs to another patient identity) or
    ``"hierarchy-conflict"`` (the series belongs to another study, or the SOP instance to another series).
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def store_instance(
    session: Session,
    record: InstanceRecord,
    metadata_blob: bytes,
    pixel_blob: bytes | None,
    policy: DuplicatePolicy | str = DuplicatePolicy.KEEP_FIRST,
    *,
    content_sha256: str | None = None,
    identity_attributes: Sequence[str] = (),
) -> tuple[UpsertResult, int | None]:
    """Store one instance and its patient/study/series rows; flushes, the caller's unit of work commits.
    Returns the result and, when something was written, the series row id (what a compression job names).

    Ingest never moves or relabels stored data: an instance whose patient identity (Patient ID + issuer, plus
    ``identity_attributes`` such as ``"PatientName"``) differs from the patient its study is stored under, or
    whose series/instance sits under another parent, raises :class:`HierarchyConflict`. Stored patient, study
    and series attributes are only filled where empty, never overwritten.

    A SOP Instance UID already archived is left alone when the re-send is identical (``content_sha256``
    equal, "identical") or with ``"keep-first"`` ("kept-first"); ``"replace"`` overwrites attributes and
    blobs in place (same row id, same series).
    """
    if policy not in tuple(DuplicatePolicy):
        raise ValueError(f"unknown duplicate policy {policy!r}")
    unknown = set(identity_attributes) - set(IDENTITY_ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown identity attribute(s) {sorted(unknown)}")
    if record.storage not in STORAGE_KINDS:
        raise ValueError(f"unknown storage kind {record.storage!r}")
    if record.storage == StorageKind.CAE and not record.codec_model_id:
        raise ValueError("a 'cae' instance must name its codec model")
    fields = tuple(IDENTITY_ATTRIBUTES[a] for a in identity_attributes)
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            with session.begin_nested():
                return _upsert(session, record, metadata_blob, pixel_blob, policy, content_sha256, fields)
        except IntegrityError:
            if attempt == _MAX_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _upsert(
    session: Session, record: InstanceRecord, metadata_blob: bytes, pixel_blob: bytes | None, policy: str,
    content_sha256: str | None, identity_fields: tuple[str, ...],
) -> tuple[UpsertResult, int | None]:
    found = session.execute(_STATEMENTS.existing, {"uid": record.sop_instance_uid}).one_or_none()
    if found is not None:
        if content_sha256 is not None and found.content_sha256 == content_sha256:
            return "identical", None
        if policy == DuplicatePolicy.KEEP_FIRST:
            return "kept-first", None
    if record.codec_model_id:
        _ensure_codec_model(session, record)
    values = {name: getattr(record, name) for name in _INSTANCE_FIELDS}
    values.update(
        stored_pixel_bytes=len(pixel_blob) if pixel_blob is not None else 0,
        metadata_bytes=len(metadata_blob),
        received_at=utcnow(),
        content_sha256=content_sha256,
    )
    if found is None:
        series_pk = _known_series(session, record, identity_fields)
        if series_pk is None:
            series_pk = _series_for(session, record, identity_fields).id
        # Core inserts: the common case (a new slice of a known series) is three statements, no ORM flush
        inserted = cast(CursorResult[Any], session.execute(
            _STATEMENTS.insert_instance, {"sop_instance_uid": record.sop_instance_uid, "series_pk": series_pk,
                                          **values}))
        instance_pk = inserted.inserted_primary_key[0]  # type: ignore[index]
        session.execute(_STATEMENTS.insert_blob, {"instance_pk": instance_pk, "metadata": metadata_blob,
                                                  "pixels": pixel_blob})
        return "stored", series_pk
    existing = session.get(Instance, found.id)
    assert existing is not None  # locked above
    series = _series_for(session, record, identity_fields)
    if existing.series_pk != series.id:
        raise HierarchyConflict(
            "hierarchy-conflict",
            f"SOP instance {record.sop_instance_uid} is stored in another series than {record.series_instance_uid}",
        )
    for name, value in values.items():
        setattr(existing, name, value)
    blob = session.get(InstanceBlob, existing.id)
    if blob is None:
        session.add(InstanceBlob(instance_pk=existing.id, metadata_blob=metadata_blob, pixel_blob=pixel_blob))
    else:
        blob.metadata_blob, blob.pixel_blob = metadata_blob, pixel_blob
    session.flush()
    return "replaced", series.id


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


def _normalised(field_name: str, value: str | None) -> str:
    """Compare names without case, padding or empty trailing components (``DOE^JOHN^^`` == ``Doe^John``)."""
    text = (value or "").strip()
    if field_name == "patient_name":
        text = text.upper().rstrip("^ ")
    return text


def identity_conflict(patient: Patient, record: InstanceRecord, fields: Sequence[str]) -> str | None:
    """Why ``record`` is not the stored ``patient`` (None: same patient).

    Patient ID and issuer must be equal. The other ``fields`` conflict only when both sides have a value:
    a missing value contradicts nothing. Without a Patient ID, name and birth date are all that identify the
    patient, so they are always compared.
    """
    if (patient.patient_id, patient.issuer) != (record.patient_id, record.issuer):
        return (f"Patient ID {record.patient_id!r} (issuer {record.issuer!r}) differs from the stored "
                f"{patient.patient_id!r} (issuer {patient.issuer!r})")
    compared = list(fields)
    if not record.patient_id:
        compared += [f for f in ("patient_name", "birth_date") if f not in compared]
    for name in compared:
        stored, received = _normalised(name, getattr(patient, name)), _normalised(name, getattr(record, name))
        if stored and received and stored != received:
            return f"{name} {getattr(record, name)!r} differs from the stored {getattr(patient, name)!r}"
    return None


def _series_for(session: Session, record: InstanceRecord, identity_fields: tuple[str, ...]) -> Series:
    """Get or create the patient, study and series rows for ``record``; raise on any contradiction."""
    study = session.scalars(
        select(Study).where(Study.study_instance_uid == record.study_instance_uid)
    ).one_or_none()
    if study is not None:
        patient = session.get(Patient, study.patient_pk)
        assert patient is not None  # foreign key
        conflict = identity_conflict(patient, record, identity_fields)
        if conflict:
            raise HierarchyConflict("patient-conflict", f"study {record.study_instance_uid}: {conflict}")
    else:
        patient = None
        if record.patient_id:  # without an ID nobody else is this patient: a new row per study
            patient = session.scalars(
                select(Patient).where(Patient.patient_id == record.patient_id, Patient.issuer == record.issuer)
            ).one_or_none()
            conflict = identity_conflict(patient, record, identity_fields) if patient is not None else None
            if conflict:
                raise HierarchyConflict("patient-conflict", f"new study {record.study_instance_uid}: {conflict}")
        if patient is None:
            patient = Patient(patient_id=record.patient_id, issuer=record.issuer)
            session.add(patient)
            session.flush()
        study = Study(study_instance_uid=record.study_instance_uid, patient_pk=patient.id)
        session.add(study)
    _fill(patient, record, _PATIENT_FIELDS)
    _fill(study, record, _STUDY_FIELDS)
    session.flush()

    series = session.scalars(
        select(Series).where(Series.series_instance_uid == record.series_instance_uid)
    ).one_or_none()
    if series is None:
        series = Series(series_instance_uid=record.series_instance_uid, study_pk=study.id)
        session.add(series)
    elif series.study_pk != study.id:
        raise HierarchyConflict(
            "hierarchy-conflict",
            f"series {record.series_instance_uid} is stored in another study than {record.study_instance_uid}",
        )
    _fill(series, record, _SERIES_FIELDS)
    session.flush()
    return series


def _table(entity: Any) -> Table:
    return cast(Table, entity.__table__)


def _known_series(session: Session, record: InstanceRecord, identity_fields: tuple[str, ...]) -> int | None:
    """The series row id when ``record`` adds a slice to a stored series and changes nothing above it.

    One joined read instead of three ORM lookups and flushes. None whenever :func:`_series_for` has something
    to do or to refuse (no such series, another study, an identity conflict, an empty stored value to fill):
    that path then decides, with its own checks and messages.
    """
    row = session.execute(_STATEMENTS.known_series, {"uid": record.series_instance_uid}).one_or_none()
    if row is None or row[1] != record.study_instance_uid or (row[2], row[3]) != (record.patient_id, record.issuer):
        return None
    stored = dict(zip((*_PATIENT_FIELDS, *_STUDY_FIELDS, *_SERIES_FIELDS), row[4:]))
    if any(getattr(record, name) is not None and value is None for name, value in stored.items()):
        return None  # something to fill in
    compared = list(identity_fields)
    if not record.patient_id:
        compared += [f for f in ("patient_name", "birth_date") if f not in compared]
    for name in compared:
        if _normalised(name, stored[name]) and _normalised(name, getattr(record, name)) and \
                _normalised(name, stored[name]) != _normalised(name, getattr(record, name)):
            return None
    return int(row[0])


class _Statements:
    """The statements every C-STORE runs, built once: building a SQLAlchemy expression (coercing each column
    and value) cost more than executing it. Values are bound at execution."""

    def __init__(self) -> None:
        self.existing = (select(Instance.id, Instance.content_sha256)
                         .where(Instance.sop_instance_uid == bindparam("uid")).with_for_update())
        self.insert_instance = insert(_table(Instance))
        self.insert_blob = insert(_table(InstanceBlob))
        self.known_series = (
            select(Series.id, Study.study_instance_uid, Patient.patient_id, Patient.issuer,
                   *(getattr(Patient, f) for f in _PATIENT_FIELDS), *(getattr(Study, f) for f in _STUDY_FIELDS),
                   *(getattr(Series, f) for f in _SERIES_FIELDS))
            .join(Study, Study.id == Series.study_pk).join(Patient, Patient.id == Study.patient_pk)
            .where(Series.series_instance_uid == bindparam("uid")))


_STATEMENTS = _Statements()


def _fill(row: object, record: InstanceRecord, fields: Sequence[str]) -> None:
    """Set attributes the row does not have yet; a stored value is never overwritten by ingest."""
    for name in fields:
        value = getattr(record, name)
        if value is not None and getattr(row, name) is None:
            setattr(row, name, value)


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
    "IDENTITY_ATTRIBUTES",
    "QUALITY_GATE_REASON",
    "DuplicatePolicy",
    "HierarchyConflict",
    "StoredInstance",
    "UpsertResult",
    "identity_conflict",
    "load_instance_rows",
    "store_instance",
]
