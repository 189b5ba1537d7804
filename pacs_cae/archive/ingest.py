"""Store one received dataset: validate, keep it losslessly, enqueue its compression, commit.

This is the C-STORE fast path (issue 12): nothing here waits for the learned codec. Everything that can fail
because of the data (validation, metadata serialisation, the lossless encoding) happens before the database
transaction; the transaction writes the index rows, the metadata blob, the lossless pixel blob and, when a
``[[compression.rules]]`` rule selects the instance, its series' compression job
(:mod:`pacs_cae.store.jobs`) together. Only after it committed does :func:`ingest` return a
:class:`StoreOutcome` (C-STORE answers 0x0000 on that). Workers (:mod:`pacs_cae.archive.compression`) later
replace the lossless blobs of a whole series by learned-codec blobs when every slice meets the floors.

Pixel paths at ingest:

* ``lossless`` - everything with Pixel Data, byte-exact (:mod:`pacs_cae.codec.lossless`): verbatim, because
  a job follows (its worker re-encodes the bytes: by the learned codec when a rule compresses the series, else
  in their smallest exact coding, a :data:`~pacs_cae.archive.compression_rules.LOSSLESS_JOB`); encoded at once
  only with compression off, no ``codec.lossless_methods``, or a rule that waits days.
* ``none`` - objects without Pixel Data (SR, presentation states, ...): the metadata blob is the object.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from sqlalchemy.exc import SQLAlchemyError

from pacs_cae.archive.compression_rules import LOSSLESS_JOB, due_at, eligible, recodes_lossless, select_rule
from pacs_cae.archive.errors import ArchiveError, CannotUnderstand, DataSetMismatch, OutOfResources
from pacs_cae.archive.received import ReceivedInstance
from pacs_cae.codec.lossless import encode_lossless, store_verbatim
from pacs_cae.config import Settings
from pacs_cae.dicom.integrity import EncodedDataSet, encoding_problem, pixel_data_problem
from pacs_cae.dicom.metadata import encode_metadata
from pacs_cae.dicom.transcode import TranscodeError, to_little_endian
from pacs_cae.store import jobs
from pacs_cae.store.db import Database
from pacs_cae.store.record import InvalidRecord
from pacs_cae.store.rejections import count_rejection
from pacs_cae.store.repository import HierarchyConflict, store_instance
from pacs_cae.store.schema import utcnow
from pacs_cae.vocabulary import DuplicatePolicy, StorageKind

LOG = logging.getLogger(__name__)

#: CannotUnderstand sub-codes (PS3.4 B.2.3 leaves the low 12 bits of 0xCxxx to the implementation). All are
#: failures a re-send cannot cure, unlike 0xA7xx "out of resources", which invites a retry.
STATUS_MISSING_ATTRIBUTE = 0xC001
STATUS_UNENCODABLE = 0xC002
STATUS_INCOMPLETE = 0xC003  # the stream ends inside an element, or Pixel Data does not fit the image attributes
STATUS_PATIENT_CONFLICT = 0xC004  # the study is stored under another patient identity
STATUS_HIERARCHY_CONFLICT = 0xC005  # the series (or SOP instance) is stored under another study (or series)
#: Warning "Coercion of Data Elements" (PS3.4 B.2.3): a re-send with other content was not stored; what the
#: archive holds (the first copy) differs from what the SCU sent.
STATUS_KEPT_FIRST = 0xB000

#: The ``pacs-cae stats`` counter each refusal is counted under.
REJECTION_REASONS = {
    STATUS_MISSING_ATTRIBUTE: "missing-attribute",
    STATUS_UNENCODABLE: "unencodable",
    STATUS_INCOMPLETE: "incomplete",
    STATUS_PATIENT_CONFLICT: "patient-conflict",
    STATUS_HIERARCHY_CONFLICT: "hierarchy-conflict",
    0xA900: "sop-mismatch",
}
KEPT_FIRST_REASON = "duplicate-kept-first"

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@dataclass(frozen=True)
class StoreOutcome:
    """What was committed for one instance.

    With ``result`` "identical" or "kept-first" nothing was written: the fields describe how the re-sent copy
    would have been stored; the first copy stays as it was.
    """

    @property
    def status(self) -> int:
        """The C-STORE status: success, or the warning for a changed re-send that kept the first copy."""
        return STATUS_KEPT_FIRST if self.result == "kept-first" else 0x0000

    sop_instance_uid: str
    sop_class_uid: str
    served_sop_instance_uid: str  # the UID C-FIND answers and C-GET/C-MOVE deliver (until compressed)
    storage: str  # StorageKind: LOSSLESS or NONE (a worker may later make a LOSSLESS instance CAE)
    result: str  # "stored" | "replaced" | "identical" | "kept-first" (the last two wrote nothing)
    compression_rule: str | None  # the rule whose job will compress the series; None: stays lossless
    original_pixel_bytes: int
    stored_pixel_bytes: int
    metadata_bytes: int


def validate(ds: Dataset, affected_sop_class: str | None = None,
             affected_sop_instance: str | None = None, encoded: EncodedDataSet | None = None) -> None:
    """Raise the ArchiveError the C-STORE must answer for a dataset the archive cannot take.

    Order: a missing UID (0xC001) before a UID that differs from the request (0xA900), then an incomplete
    stream or Pixel Data that does not fit the image attributes (0xC003).
    """
    for keyword in REQUIRED_UIDS:
        try:
            value = str(ds.get(keyword, "") or "").strip()
        except Exception as exc:  # an element pydicom cannot convert
            raise CannotUnderstand(f"{keyword} cannot be parsed: {exc}",
                                   status=STATUS_MISSING_ATTRIBUTE) from exc
        if not value:
            raise CannotUnderstand(f"required attribute {keyword} is missing or empty",
                                   status=STATUS_MISSING_ATTRIBUTE)
    sop_class, sop_instance = str(ds.SOPClassUID).strip(), str(ds.SOPInstanceUID).strip()
    if affected_sop_class and sop_class != str(affected_sop_class).strip():
        raise DataSetMismatch(f"SOP Class UID {sop_class} does not match the request's {affected_sop_class}")
    if affected_sop_instance and sop_instance != str(affected_sop_instance).strip():
        raise DataSetMismatch(
            f"SOP Instance UID {sop_instance} does not match the request's {affected_sop_instance}")
    problem = None
    if encoded is not None:
        problem = encoding_problem(encoded)
    problem = problem or pixel_data_problem(ds)
    if problem:
        raise CannotUnderstand(problem, status=STATUS_INCOMPLETE)


def _pixel_blob(received: ReceivedInstance, settings: Settings, *, verbatim: bool) -> bytes:
    """The exact pixel blob: verbatim (CRC only) when a compression job will re-encode it, else encoded."""
    if verbatim:
        return store_verbatim(received.dataset.PixelData)
    return encode_lossless(received.dataset.PixelData, received.layout, brotli_quality=settings.codec.brotli_quality)


def duplicate_policy(settings: Settings, calling_aet: str) -> DuplicatePolicy:
    """``replace`` for the calling AEs a site trusts to correct their own objects, else the configured policy."""
    server = settings.server
    return DuplicatePolicy.REPLACE if calling_aet.strip() in {a.strip() for a in server.replace_calling_aets} \
        else server.duplicate_policy


def content_digest(metadata_blob: bytes, ds: Dataset) -> str:
    """SHA-256 over the encoded metadata and the Pixel Data as received (equal for an identical re-send)."""
    digest = hashlib.sha256(metadata_blob)
    if "PixelData" in ds:
        digest.update(ds.PixelData)
    return digest.hexdigest()


def ingest(ds: Dataset, *, settings: Settings, database: Database, calling_aet: str = "",
           affected_sop_class: str | None = None, affected_sop_instance: str | None = None,
           encoded: EncodedDataSet | None = None) -> StoreOutcome:
    """Archive ``ds``; returns only after the transaction holding it committed (raises ArchiveError).

    Every refusal for the data's sake is logged by the caller and counted here (``pacs-cae stats``).
    """
    try:
        outcome = _ingest(ds, settings=settings, database=database, calling_aet=calling_aet,
                          affected_sop_class=affected_sop_class, affected_sop_instance=affected_sop_instance,
                          encoded=encoded)
    except ArchiveError as exc:
        reason = REJECTION_REASONS.get(exc.status)
        if reason:
            count_rejection(database, reason, f"{calling_aet}: {exc.message}")
        raise
    if outcome.result == "kept-first":
        LOG.warning("instance %s re-sent by %r with other content: the first copy is kept (0x%04X)",
                    outcome.sop_instance_uid, calling_aet, STATUS_KEPT_FIRST)
        count_rejection(database, KEPT_FIRST_REASON, f"{calling_aet}: {outcome.sop_instance_uid}")
    return outcome


def _ingest(ds: Dataset, *, settings: Settings, database: Database, calling_aet: str, affected_sop_class: str | None, affected_sop_instance: str | None,
            encoded: EncodedDataSet | None) -> StoreOutcome:
    validate(ds, affected_sop_class, affected_sop_instance, encoded)
    try:
        # Explicit VR Big Endian (retired) is stored as Explicit VR LE: same values, one byte order to serve.
        to_little_endian(ds)
    except (TranscodeError, ValueError, TypeError) as exc:
        raise CannotUnderstand(f"big-endian data set cannot be normalised: {exc}",
                               status=STATUS_UNENCODABLE) from exc
    try:
        metadata_blob = encode_metadata(ds, quality=settings.codec.brotli_quality, encoded=encoded)
    except Exception as exc:
        raise CannotUnderstand(f"data set cannot be encoded: {exc}", status=STATUS_UNENCODABLE) from exc
    try:
        received = ReceivedInstance.read(ds)  # the data set is read once, here; later steps use this
    except InvalidRecord as exc:
        raise CannotUnderstand(str(exc), status=STATUS_MISSING_ATTRIBUTE) from exc
    try:
        original_bytes = len(ds.PixelData) if received.has_pixel_data else 0
    except Exception as exc:
        raise CannotUnderstand(f"Pixel Data cannot be read: {exc}", status=STATUS_UNENCODABLE) from exc
    storage = StorageKind.LOSSLESS if received.has_pixel_data else StorageKind.NONE
    sop_instance = received.sop_instance_uid
    record = received.record(storage=storage, original_pixel_bytes=original_bytes, calling_aet=calling_aet)
    rule = select_rule(settings, record)
    if rule is not None and not eligible(ds, settings.codec)[0]:
        rule = None  # the codec cannot take these pixels: the series stays lossless
    # The series' job: its rule's (compress it), else one that only re-codes it exactly (LOSSLESS_JOB).
    job = rule.name if rule is not None else (
        LOSSLESS_JOB if received.has_pixel_data and recodes_lossless(settings) else None)
    try:
        # A job follows (a worker encodes the series later): the bytes as received, nothing to wait for
        # (a rule that waits days keeps the encoded form meanwhile).
        verbatim = job is not None and (rule is None or rule.after_days <= 0)
        pixel_blob = _pixel_blob(received, settings, verbatim=verbatim) if received.has_pixel_data else None
    except Exception as exc:
        raise CannotUnderstand(f"Pixel Data cannot be read: {exc}", status=STATUS_UNENCODABLE) from exc

    digest = content_digest(metadata_blob, ds)  # before the write transaction: writers queue behind it
    try:
        with database.session() as session:
            result, series_pk = store_instance(
                session, record, metadata_blob, pixel_blob,
                duplicate_policy(settings, calling_aet),
                content_sha256=digest,
                identity_attributes=settings.server.patient_identity_attributes,
            )
            if job is not None and series_pk is not None:  # nothing written: nothing to do
                jobs.enqueue(session, series_pk, job, due_at(rule, settings.compression, record.study_date, utcnow()))
    except HierarchyConflict as exc:
        status = STATUS_PATIENT_CONFLICT if exc.reason == "patient-conflict" else STATUS_HIERARCHY_CONFLICT
        raise CannotUnderstand(f"{exc.reason}: {exc}", status=status) from exc
    except SQLAlchemyError as exc:
        LOG.error("instance %s not stored, database error: %s", sop_instance, exc)
        raise OutOfResources(f"database error: {type(exc).__name__}") from exc
    except OSError as exc:
        LOG.error("instance %s not stored: %s", sop_instance, exc)
        raise OutOfResources(str(exc)) from exc

    LOG.info("stored %s (%s, %s) from %r as %s%s", sop_instance, record.modality or "-", result,
             calling_aet, storage, f", compression rule {rule.name!r}" if rule else "")
    return StoreOutcome(
        sop_instance_uid=sop_instance,
        sop_class_uid=record.sop_class_uid,
        served_sop_instance_uid=sop_instance,
        storage=storage,
        result=result,
        compression_rule=rule.name if rule and result in ("stored", "replaced") else None,
        original_pixel_bytes=original_bytes,
        stored_pixel_bytes=len(pixel_blob) if pixel_blob is not None else 0,
        metadata_bytes=len(metadata_blob),
    )


__all__ = ["EncodedDataSet", "StoreOutcome", "ingest", "validate"]
