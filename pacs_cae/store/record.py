"""The indexed attributes of one received instance, as plain values the store can write.

Ingest reads them from the data set (:class:`pacs_cae.archive.received.ReceivedInstance`) and fills the
storage fields (``storage``, ``original_pixel_bytes``, ...) once it knows how the pixels are kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pacs_cae.vocabulary import StorageKind


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
    storage: str = StorageKind.LOSSLESS  # a StorageKind
    derived_sop_instance_uid: str | None = None  # set for every "cae" instance, whatever codec.lossy_uid says
    codec_model_id: str | None = None
    codec_sha256: str | None = None
    codec_architecture: str | None = None
    fallback_reason: str | None = None  # why an eligible slice went lossless, e.g. "quality-gate: ..."
    original_pixel_bytes: int = 0
    calling_aet: str = ""

    def replace(self, **changes: Any) -> InstanceRecord:
        """A copy with ``changes`` applied (shorthand for :func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)


__all__ = ["InstanceRecord", "InvalidRecord"]
