"""The archive's relational schema (SQLAlchemy 2 typed ORM).

The tables are created and changed only by the Alembic revisions in ``migrations/``; this module describes them
for the ORM and a test checks the two agree. Strings are unbounded (``VARCHAR``/``TEXT``) because received
DICOM values do not always respect their VR's length limit and must still be archived. Dates and times are kept
as DICOM strings (``YYYYMMDD``, ``HHMMSS.FFFFFF``), which sort and compare correctly as text.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from pacs_cae.vocabulary import StorageKind

#: Constraint names are fixed so migrations and the ORM name them identically on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STORAGE_KINDS = tuple(StorageKind)  # the values instance.storage holds


def utcnow() -> datetime:
    """Timestamps are stored in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CodecModel(Base):
    """A codec model that produced at least one stored blob; kept so old blobs stay decodable and auditable."""

    __tablename__ = "codec_model"

    model_id: Mapped[str] = mapped_column(String, primary_key=True)
    sha256: Mapped[str] = mapped_column(String)
    architecture: Mapped[str] = mapped_column(String, default="")
    first_used: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


#: Only patients with a Patient ID are unique by (ID, issuer); each study without one gets its own row.
_HAS_PATIENT_ID = text("patient_id <> ''")


class Patient(Base):
    """PATIENT level. Identity is (Patient ID, Issuer of Patient ID); an absent issuer is stored as ''.

    Patients without a Patient ID are never merged: every such study has a patient row of its own.
    """

    __tablename__ = "patient"
    __table_args__ = (
        Index("ux_patient_patient_id_issuer", "patient_id", "issuer", unique=True,
              sqlite_where=_HAS_PATIENT_ID, postgresql_where=_HAS_PATIENT_ID),
        Index(None, "patient_name"),
        Index(None, "birth_date"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(String, default="")
    issuer: Mapped[str] = mapped_column(String, default="")
    patient_name: Mapped[str | None] = mapped_column(String)
    birth_date: Mapped[str | None] = mapped_column(String)
    sex: Mapped[str | None] = mapped_column(String)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient", passive_deletes=True)


class Study(Base):
    """STUDY level; ModalitiesInStudy and the counts are derived at query time, never stored."""

    __tablename__ = "study"
    __table_args__ = (
        Index(None, "patient_pk"),
        Index(None, "study_date"),
        Index(None, "accession_number"),
        Index(None, "study_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.id", ondelete="CASCADE"))
    study_instance_uid: Mapped[str] = mapped_column(String, unique=True)
    study_date: Mapped[str | None] = mapped_column(String)
    study_time: Mapped[str | None] = mapped_column(String)
    accession_number: Mapped[str | None] = mapped_column(String)
    study_id: Mapped[str | None] = mapped_column(String)
    referring_physician_name: Mapped[str | None] = mapped_column(String)
    study_description: Mapped[str | None] = mapped_column(String)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study", passive_deletes=True)


class Series(Base):
    """SERIES level."""

    __tablename__ = "series"
    __table_args__ = (
        Index(None, "study_pk"),
        Index(None, "modality"),
        Index(None, "series_number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(String, unique=True)
    modality: Mapped[str | None] = mapped_column(String)
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(String)
    body_part_examined: Mapped[str | None] = mapped_column(String)
    series_date: Mapped[str | None] = mapped_column(String)
    series_time: Mapped[str | None] = mapped_column(String)
    protocol_name: Mapped[str | None] = mapped_column(String)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", passive_deletes=True)


class Instance(Base):
    """IMAGE level: one received SOP instance, how it is stored, and what it cost."""

    __tablename__ = "instance"
    __table_args__ = (
        Index(None, "series_pk"),
        Index(None, "derived_sop_instance_uid"),
        Index(None, "sop_class_uid"),
        Index(None, "instance_number"),
        Index(None, "storage"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String, unique=True)
    #: The UID a lossy (CAE) copy is served under when ``codec.lossy_uid = "derive"``.
    derived_sop_instance_uid: Mapped[str | None] = mapped_column(String)
    sop_class_uid: Mapped[str] = mapped_column(String)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    content_date: Mapped[str | None] = mapped_column(String)
    content_time: Mapped[str | None] = mapped_column(String)
    transfer_syntax_uid: Mapped[str] = mapped_column(String)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    bits_allocated: Mapped[int | None] = mapped_column(Integer)
    bits_stored: Mapped[int | None] = mapped_column(Integer)
    pixel_representation: Mapped[int | None] = mapped_column(Integer)
    photometric_interpretation: Mapped[str | None] = mapped_column(String)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    storage: Mapped[str] = mapped_column(String)  # "cae" | "lossless" | "none" (no pixel data)
    codec_model_id: Mapped[str | None] = mapped_column(ForeignKey("codec_model.model_id"))
    fallback_reason: Mapped[str | None] = mapped_column(String)
    original_pixel_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # PixelData as received
    stored_pixel_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # len(pixel blob)
    metadata_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # len(metadata blob)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    calling_aet: Mapped[str] = mapped_column(String, default="")
    #: SHA-256 of the received object (metadata blob + Pixel Data): tells an identical re-send from a changed one.
    content_sha256: Mapped[str | None] = mapped_column(String)

    series: Mapped[Series] = relationship(back_populates="instances")
    blob: Mapped[InstanceBlob] = relationship(back_populates="instance", passive_deletes=True)
    codec_model: Mapped[CodecModel | None] = relationship()


class InstanceBlob(Base):
    """The bytes of an instance, apart from the index so queries never read them."""

    __tablename__ = "instance_blob"

    instance_pk: Mapped[int] = mapped_column(
        ForeignKey("instance.id", ondelete="CASCADE"), primary_key=True
    )
    #: Every element but PixelData, as (compressed) DICOM bytes; the format is the ingest layer's choice.
    metadata_blob: Mapped[bytes] = mapped_column("metadata", LargeBinary)
    #: The CAE container or lossless blob; None when the instance has no pixel data.
    pixel_blob: Mapped[bytes | None] = mapped_column("pixels", LargeBinary)

    instance: Mapped[Instance] = relationship(back_populates="blob")


class IngestRejection(Base):
    """How many received instances were refused (or not stored, e.g. a changed re-send), by reason.

    One row per reason, so the table stays small however many are refused; the log has each occurrence.
    """

    __tablename__ = "ingest_rejection"

    reason: Mapped[str] = mapped_column(String, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_detail: Mapped[str] = mapped_column(String, default="")


JOB_STATES = ("pending", "running", "done", "failed")


class CompressionJob(Base):
    """Deferred compression of one series (pacs_cae/store/jobs.py; revision 0003).

    Ingest bumps ``generation`` whenever an instance of the series is stored; a worker that finishes a run
    it claimed at an older generation leaves the job ``pending`` so the newer instances get their turn.
    ``decision`` is the series-level outcome ("lossy" or "lossless") that later arrivals follow.
    """

    __tablename__ = "compression_job"
    __table_args__ = (Index(None, "state", "not_before"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), unique=True)
    state: Mapped[str] = mapped_column(String, default="pending")
    rule: Mapped[str] = mapped_column(String, default="")
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    claimed_generation: Mapped[int | None] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String)
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    decision: Mapped[str | None] = mapped_column(String)
    last_error: Mapped[str | None] = mapped_column(String)
    compressed_instances: Mapped[int] = mapped_column(Integer, default=0)  # swapped to lossy, all runs
    saved_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # lossless blob bytes - lossy blob bytes
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


__all__ = [
    "JOB_STATES",
    "NAMING_CONVENTION",
    "STORAGE_KINDS",
    "Base",
    "CodecModel",
    "CompressionJob",
    "IngestRejection",
    "Instance",
    "InstanceBlob",
    "Patient",
    "Series",
    "Study",
    "utcnow",
]
