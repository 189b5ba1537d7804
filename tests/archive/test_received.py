"""archive.received: a data set read once into its UIDs, stored syntax, pixel layout and index values."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from pacs_cae.archive.received import ReceivedInstance, record_from_dataset
from pacs_cae.store import InvalidRecord
from tests.store.test_repository import dataset


def test_record_from_dataset_reads_the_indexed_attributes():
    ds = dataset("1.9.1.1.1", SeriesNumber="3", InstanceNumber=7, StudyTime="10:15:00", PatientBirthDate="1970.01.01",
                 ImageType=["ORIGINAL", "PRIMARY"], Rows=512, Columns=256, BitsStored=12)
    record = record_from_dataset(ds, storage="cae", codec_model_id="m")
    assert (record.patient_id, record.issuer, record.patient_name) == ("P1", "", "Test^Patient")
    assert (record.series_number, record.instance_number, record.rows, record.columns, record.bits_stored) == (
        3, 7, 512, 256, 12)
    assert (record.study_time, record.birth_date) == ("101500", "19700101")
    assert record.transfer_syntax_uid == "1.2.840.10008.1.2.4.80"
    assert (record.storage, record.codec_model_id) == ("cae", "m")
    assert record.study_description is None


@pytest.mark.parametrize("missing", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"])
def test_record_requires_the_hierarchy_uids(missing):
    ds = dataset("1.9.1.1.1")
    delattr(ds, missing)
    with pytest.raises(InvalidRecord, match=missing):
        record_from_dataset(ds)


def test_received_instance_reads_uids_syntax_and_layout_once():
    ds = dataset("1.9.1.1.1", Rows=2, Columns=3, BitsAllocated=16, PixelRepresentation=1, SamplesPerPixel=1)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = np.zeros((2, 3), dtype="<i2").tobytes()
    received = ReceivedInstance.read(ds)
    assert (received.sop_instance_uid, received.sop_class_uid) == ("1.9.1.1.1", "1.2.840.10008.5.1.4.1.1.4")
    assert received.transfer_syntax == ExplicitVRLittleEndian and received.has_pixel_data
    assert received.layout is not None and (received.layout.rows, received.layout.pixel_representation) == (2, 1)
    record = received.record(storage="lossless", original_pixel_bytes=12)
    assert (record.storage, record.original_pixel_bytes, record.rows) == ("lossless", 12, 2)
    encapsulated = dataset("1.9.1.1.2")  # JPEG-LS: no native layout, the lossless codec keeps the bytes
    encapsulated.PixelData = b"\0\0"
    assert ReceivedInstance.read(encapsulated).layout is None
