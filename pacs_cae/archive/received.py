"""One received instance, read once at the start of ingest: what every later step of the store pipeline needs.

As dcm4chee-arc's ``StoreContext`` does, ingest reads the data set once (after validation and big-endian
normalisation) into a :class:`ReceivedInstance`: its UIDs, the transfer syntax it is stored in, its native pixel
layout and the indexed attributes the store writes (:class:`~pacs_cae.store.record.InstanceRecord`). Reading the
indexed attributes moved here from the store, which holds rows, not pydicom parsing; the value parsers are
:mod:`pacs_cae.dicom.values`, which the codec policy reads integers with too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from pacs_cae.codec.lossless import PixelLayout
from pacs_cae.dicom.metadata import received_transfer_syntax
from pacs_cae.dicom.values import date, integer, text, time
from pacs_cae.store.record import InstanceRecord, InvalidRecord


@dataclass(frozen=True)
class ReceivedInstance:
    """A data set as the archive stores it, with what was read from it once."""

    dataset: Dataset
    transfer_syntax: UID  # as stored (Explicit VR Big Endian is already rewritten as Explicit VR LE)
    sop_class_uid: str
    sop_instance_uid: str
    has_pixel_data: bool
    #: Native little-endian pixel layout for the lossless codec; None for encapsulated or odd data.
    layout: PixelLayout | None
    #: The indexed attributes (storage fields at their defaults: see :meth:`record`).
    index: InstanceRecord

    @classmethod
    def read(cls, ds: Dataset) -> ReceivedInstance:
        """Read ``ds`` once; raises :class:`InvalidRecord` when a UID the hierarchy needs is absent."""
        syntax = received_transfer_syntax(ds)
        index = _index(ds, syntax)
        has_pixels = "PixelData" in ds
        return cls(dataset=ds, transfer_syntax=syntax, sop_class_uid=index.sop_class_uid,
                   sop_instance_uid=index.sop_instance_uid, has_pixel_data=has_pixels,
                   layout=_layout(ds, syntax) if has_pixels else None, index=index)

    def record(self, **storage: Any) -> InstanceRecord:
        """The row values with the storage fields (``storage``, ``original_pixel_bytes``, ...) filled in."""
        return self.index.replace(**storage)


def record_from_dataset(ds: Dataset, **storage: Any) -> InstanceRecord:
    """The indexed attributes of ``ds`` with ``storage`` fields set (``InvalidRecord`` for a missing UID)."""
    return _index(ds, received_transfer_syntax(ds)).replace(**storage)


def _index(ds: Dataset, syntax: UID) -> InstanceRecord:
    return InstanceRecord(
        patient_id=text(ds, "PatientID") or "",
        issuer=text(ds, "IssuerOfPatientID") or "",
        patient_name=text(ds, "PatientName"),
        birth_date=date(ds, "PatientBirthDate"),
        sex=text(ds, "PatientSex"),
        study_instance_uid=uid(ds, "StudyInstanceUID"),
        study_date=date(ds, "StudyDate"),
        study_time=time(ds, "StudyTime"),
        accession_number=text(ds, "AccessionNumber"),
        study_id=text(ds, "StudyID"),
        referring_physician_name=text(ds, "ReferringPhysicianName"),
        study_description=text(ds, "StudyDescription"),
        series_instance_uid=uid(ds, "SeriesInstanceUID"),
        modality=text(ds, "Modality"),
        series_number=integer(ds, "SeriesNumber"),
        series_description=text(ds, "SeriesDescription"),
        body_part_examined=text(ds, "BodyPartExamined"),
        series_date=date(ds, "SeriesDate"),
        series_time=time(ds, "SeriesTime"),
        protocol_name=text(ds, "ProtocolName"),
        sop_instance_uid=uid(ds, "SOPInstanceUID"),
        sop_class_uid=uid(ds, "SOPClassUID"),
        instance_number=integer(ds, "InstanceNumber"),
        content_date=date(ds, "ContentDate"),
        content_time=time(ds, "ContentTime"),
        transfer_syntax_uid=str(syntax),
        rows=integer(ds, "Rows"),
        columns=integer(ds, "Columns"),
        bits_allocated=integer(ds, "BitsAllocated"),
        bits_stored=integer(ds, "BitsStored"),
        pixel_representation=integer(ds, "PixelRepresentation"),
        photometric_interpretation=text(ds, "PhotometricInterpretation"),
        number_of_frames=integer(ds, "NumberOfFrames"),
    )


def lossless_layout(ds: Dataset) -> PixelLayout | None:
    """The native pixel layout of a dataset read back from the store (the worker's re-coding)."""
    return _layout(ds, received_transfer_syntax(ds))


def _layout(ds: Dataset, syntax: UID) -> PixelLayout | None:
    """Native pixel layout for the lossless codec; None (plain Brotli) for encapsulated or odd data."""
    if syntax.is_encapsulated or not syntax.is_little_endian:
        return None
    try:
        return PixelLayout(
            rows=int(ds.Rows), columns=int(ds.Columns), bits_allocated=int(ds.BitsAllocated),
            pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
            frames=int(ds.get("NumberOfFrames", 1) or 1),
        )
    except (AttributeError, TypeError, ValueError):
        return None


def uid(ds: Dataset, keyword: str) -> str:
    """A UID the hierarchy needs; :class:`InvalidRecord` when it is missing or empty."""
    value = text(ds, keyword)
    if not value:
        raise InvalidRecord(keyword)
    return value


__all__ = ["ReceivedInstance", "lossless_layout", "record_from_dataset", "uid"]
