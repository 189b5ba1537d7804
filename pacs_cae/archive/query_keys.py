"""The C-FIND keys the archive matches and returns, by query level (PS3.4 C.6.1.1 / C.6.2.1).

Each key maps to an indexed column (or to a value computed at query time: counts, ModalitiesInStudy,
SOPClassesInStudy). Keys of a level may be used at that level and below; Study Root carries the patient keys on
its STUDY level.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import InstrumentedAttribute

from pacs_cae.archive.matching import Kind
from pacs_cae.store.schema import Instance, Patient, Series, Study
from pacs_cae.vocabulary import QueryModel

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
MODEL_LEVELS = {QueryModel.PATIENT_ROOT: LEVELS, QueryModel.STUDY_ROOT: LEVELS[1:]}
UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


@dataclass(frozen=True)
class Key:
    """A supported key: its level, how it matches, and the column holding it (None: computed)."""

    keyword: str
    level: str
    kind: Kind
    column: InstrumentedAttribute | None = None
    matchable: bool = True


def _keys(*keys: Key) -> dict[str, Key]:
    return {k.keyword: k for k in keys}


KEYS: dict[str, Key] = _keys(
    # PATIENT
    Key("PatientID", "PATIENT", "text", Patient.patient_id),
    Key("IssuerOfPatientID", "PATIENT", "text", Patient.issuer),
    Key("PatientName", "PATIENT", "pn", Patient.patient_name),
    Key("PatientBirthDate", "PATIENT", "date", Patient.birth_date),
    Key("PatientSex", "PATIENT", "text", Patient.sex),
    Key("NumberOfPatientRelatedStudies", "PATIENT", "int", matchable=False),
    Key("NumberOfPatientRelatedSeries", "PATIENT", "int", matchable=False),
    Key("NumberOfPatientRelatedInstances", "PATIENT", "int", matchable=False),
    # STUDY
    Key("StudyInstanceUID", "STUDY", "uid", Study.study_instance_uid),
    Key("StudyDate", "STUDY", "date", Study.study_date),
    Key("StudyTime", "STUDY", "time", Study.study_time),
    Key("AccessionNumber", "STUDY", "text", Study.accession_number),
    Key("StudyID", "STUDY", "text", Study.study_id),
    Key("ReferringPhysicianName", "STUDY", "pn", Study.referring_physician_name),
    Key("StudyDescription", "STUDY", "text", Study.study_description),
    Key("ModalitiesInStudy", "STUDY", "text"),
    Key("SOPClassesInStudy", "STUDY", "uid"),
    Key("NumberOfStudyRelatedSeries", "STUDY", "int", matchable=False),
    Key("NumberOfStudyRelatedInstances", "STUDY", "int", matchable=False),
    # SERIES
    Key("SeriesInstanceUID", "SERIES", "uid", Series.series_instance_uid),
    Key("Modality", "SERIES", "text", Series.modality),
    Key("SeriesNumber", "SERIES", "int", Series.series_number),
    Key("SeriesDescription", "SERIES", "text", Series.series_description),
    Key("BodyPartExamined", "SERIES", "text", Series.body_part_examined),
    Key("SeriesDate", "SERIES", "date", Series.series_date),
    Key("SeriesTime", "SERIES", "time", Series.series_time),
    Key("ProtocolName", "SERIES", "text", Series.protocol_name),
    Key("NumberOfSeriesRelatedInstances", "SERIES", "int", matchable=False),
    # IMAGE (SOPInstanceUID matches the received or the derived lossy UID; see archive/query.py)
    Key("SOPInstanceUID", "IMAGE", "uid", Instance.sop_instance_uid),
    Key("SOPClassUID", "IMAGE", "uid", Instance.sop_class_uid),
    Key("InstanceNumber", "IMAGE", "int", Instance.instance_number),
    Key("ContentDate", "IMAGE", "date", Instance.content_date),
    Key("ContentTime", "IMAGE", "time", Instance.content_time),
    Key("Rows", "IMAGE", "int", Instance.rows),
    Key("Columns", "IMAGE", "int", Instance.columns),
    Key("BitsAllocated", "IMAGE", "int", Instance.bits_allocated),
    Key("NumberOfFrames", "IMAGE", "int", Instance.number_of_frames),
    Key("PhotometricInterpretation", "IMAGE", "text", Instance.photometric_interpretation),
    # return-only, as C-GET delivers the image (a CAE copy declares its loss): archive/query.py
    Key("ImageType", "IMAGE", "text", matchable=False),
    Key("LossyImageCompression", "IMAGE", "text", matchable=False),
    Key("LossyImageCompressionRatio", "IMAGE", "text", matchable=False),
    Key("LossyImageCompressionMethod", "IMAGE", "text", matchable=False),
)


def level_index(level: str) -> int:
    return LEVELS.index(level)


__all__ = ["KEYS", "LEVELS", "MODEL_LEVELS", "UNIQUE_KEYS", "Key", "level_index"]
