"""The indexed attributes of one received instance, as plain values the store can write.

Ingest builds an :class:`InstanceRecord` with :meth:`InstanceRecord.from_dataset` and fills the storage fields
(``storage``, ``codec_model_id``, ...) with :func:`dataclasses.replace` once it knows how the pixels are kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue


class InvalidRecord(ValueError):
    """A dataset lacks an attribute the archive needs to index it (e.g. SOP Instance UID)."""

    def __init__(self, keyword: str) -> None:
        self.keyword = keyword
        super().__init__(f"required attribute {keyword} is missing or empty")


@dataclass(frozen=True)
class InstanceRecord:
    """Index values for the patient, study, series and instance rows, plus how the instance is stored."""

    # patient
    patient_id: str
    issuer: str
    patient_name: str | None
    birth_date: str | None
    sex: str | None
    # study
    study_instance_uid: str
    study_date: str | None
    study_time: str | None
    accession_number: str | None
    study_id: str | None
    referring_physician_name: str | None
    study_description: str | None
    # series
    series_instance_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part_examined: str | None
    series_date: str | None
    series_time: str | None
    protocol_name: str | None
    # instance
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    content_date: str | None
    content_time: str | None
    transfer_syntax_uid: str
    rows: int | None
    columns: int | None
    bits_allocated: int | None
    bits_stored: int | None
    pixel_representation: int | None
    photometric_interpretation: str | None
    number_of_frames: int | None
    # storage (filled by ingest)
    storage: str = "lossless"  # "cae" | "lossless" | "none"
    derived_sop_instance_uid: str | None = None  # set for every "cae" instance, whatever codec.lossy_uid says
    codec_model_id: str | None = None
    codec_sha256: str | None = None
    codec_architecture: str | None = None
    fallback_reason: str | None = None  # why an eligible slice went lossless, e.g. "quality-gate: ..."
    original_pixel_bytes: int = 0
    calling_aet: str = ""

    @classmethod
    def from_dataset(cls, ds: Dataset, **storage: Any) -> InstanceRecord:
        """Read the indexed attributes; ``storage`` sets the storage fields (and may override any field).

        Raises :class:`InvalidRecord` when a UID the hierarchy needs is absent.
        """
        values: dict[str, Any] = {
            "patient_id": _text(ds, "PatientID") or "",
            "issuer": _text(ds, "IssuerOfPatientID") or "",
            "patient_name": _text(ds, "PatientName"),
            "birth_date": _date(ds, "PatientBirthDate"),
            "sex": _text(ds, "PatientSex"),
            "study_instance_uid": _uid(ds, "StudyInstanceUID"),
            "study_date": _date(ds, "StudyDate"),
            "study_time": _time(ds, "StudyTime"),
            "accession_number": _text(ds, "AccessionNumber"),
            "study_id": _text(ds, "StudyID"),
            "referring_physician_name": _text(ds, "ReferringPhysicianName"),
            "study_description": _text(ds, "StudyDescription"),
            "series_instance_uid": _uid(ds, "SeriesInstanceUID"),
            "modality": _text(ds, "Modality"),
            "series_number": _int(ds, "SeriesNumber"),
            "series_description": _text(ds, "SeriesDescription"),
            "body_part_examined": _text(ds, "BodyPartExamined"),
            "series_date": _date(ds, "SeriesDate"),
            "series_time": _time(ds, "SeriesTime"),
            "protocol_name": _text(ds, "ProtocolName"),
            "sop_instance_uid": _uid(ds, "SOPInstanceUID"),
            "sop_class_uid": _uid(ds, "SOPClassUID"),
            "instance_number": _int(ds, "InstanceNumber"),
            "content_date": _date(ds, "ContentDate"),
            "content_time": _time(ds, "ContentTime"),
            "transfer_syntax_uid": _transfer_syntax(ds),
            "rows": _int(ds, "Rows"),
            "columns": _int(ds, "Columns"),
            "bits_allocated": _int(ds, "BitsAllocated"),
            "bits_stored": _int(ds, "BitsStored"),
            "pixel_representation": _int(ds, "PixelRepresentation"),
            "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
            "number_of_frames": _int(ds, "NumberOfFrames"),
        }
        values.update(storage)
        return cls(**values)

    def replace(self, **changes: Any) -> InstanceRecord:
        """A copy with ``changes`` applied (shorthand for :func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)


def _raw(ds: Dataset, keyword: str) -> Any:
    return ds.get(keyword)


def _text(ds: Dataset, keyword: str) -> str | None:
    """A string value; multi-valued attributes joined with backslash as on the wire; '' becomes None."""
    value = _raw(ds, keyword)
    if value is None:
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    text = text.strip().strip("\x00")
    return text or None


def _uid(ds: Dataset, keyword: str) -> str:
    text = _text(ds, keyword)
    if not text:
        raise InvalidRecord(keyword)
    return text


def _date(ds: Dataset, keyword: str) -> str | None:
    """DA as ``YYYYMMDD`` (the ACR-NEMA ``YYYY.MM.DD`` form is normalised so ranges compare as text)."""
    text = _text(ds, keyword)
    return text.replace(".", "") if text else None


def _time(ds: Dataset, keyword: str) -> str | None:
    """TM without the ACR-NEMA colons, so ranges compare as text."""
    text = _text(ds, keyword)
    return text.replace(":", "") if text else None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = _raw(ds, keyword)
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return None


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return str(meta.TransferSyntaxUID)
    implicit, little = getattr(ds, "original_encoding", (None, None)) or (None, None)
    if implicit:
        return "1.2.840.10008.1.2"
    if little is False:
        return "1.2.840.10008.1.2.2"
    return "1.2.840.10008.1.2.1"


__all__ = ["InstanceRecord", "InvalidRecord"]
