"""Fixture data for the query tests (see tests/archive/query/conftest.py for the layout)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from pacs_cae.archive.received import record_from_dataset
from pacs_cae.store import Database, store_instance

MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.11"

PATIENTS = {
    "PID1": {"PatientName": "Doe^John", "PatientBirthDate": "19700101", "PatientSex": "M"},
    "PID2": {"PatientName": "Smith^Jane", "PatientBirthDate": "19851231", "PatientSex": "F", "IssuerOfPatientID": "HOSP"},
    "PID3": {"PatientName": "Müller^Hans", "PatientBirthDate": "19600615", "PatientSex": "M"},
}
STUDIES = {
    "1.2.3.1": ("PID1", {"StudyDate": "20240115", "StudyTime": "101500", "AccessionNumber": "ACC1", "StudyID": "S1",
                             "ReferringPhysicianName": "Ref^Alice", "StudyDescription": "Brain MRI"}),
    "1.2.3.2": ("PID1", {"StudyDate": "20240301", "StudyTime": "154500.123", "AccessionNumber": "ACC2", "StudyID": "S2",
                             "StudyDescription": "Follow-up"}),
    "1.2.3.3": ("PID2", {"StudyDate": "20231231", "StudyTime": "080000", "AccessionNumber": "ACC_3%", "StudyID": "S3",
                             "StudyDescription": "Head CT"}),
    "1.2.3.4": ("PID3", {"StudyDate": "20220601", "StudyTime": "000000", "AccessionNumber": "ACC4", "StudyID": "S4",
                             "StudyDescription": "Brain MRI"}),
}
# series uid -> (study uid, attributes, [(sop uid, sop class, instance number, storage)])
SERIES = {
    "1.2.3.1.1": ("1.2.3.1", {"Modality": "MR", "SeriesNumber": 1, "SeriesDescription": "T1 axial",
                                  "BodyPartExamined": "BRAIN"},
                  [("1.2.3.1.1.1", MR, 1, "cae"), ("1.2.3.1.1.2", MR, 2, "cae"), ("1.2.3.1.1.3", MR, 3, "lossless")]),
    "1.2.3.1.2": ("1.2.3.1", {"Modality": "SR", "SeriesNumber": 2, "SeriesDescription": "Report"},
                  [("1.2.3.1.2.1", SR, 1, "none")]),
    "1.2.3.2.1": ("1.2.3.2", {"Modality": "MR", "SeriesNumber": 1, "SeriesDescription": "T2 axial"},
                  [("1.2.3.2.1.1", MR, 1, "cae"), ("1.2.3.2.1.2", MR, 2, "cae")]),
    "1.2.3.3.1": ("1.2.3.3", {"Modality": "CT", "SeriesNumber": 5, "SeriesDescription": "Head"},
                  [("1.2.3.3.1.1", CT, 1, "lossless")]),
    "1.2.3.4.1": ("1.2.3.4", {"Modality": "MR", "SeriesNumber": 1, "SeriesDescription": "T1 sagittal"},
                  [("1.2.3.4.1.1", MR, 7, "lossless")]),
}


#: The lossless MR slice the quality gate refused for the CAE.
QUALITY_GATE_FALLBACK = "1.2.3.1.1.3"


def derived(uid: str) -> str:
    """The lossy UID the fixture gives a CAE instance."""
    return "2.25.9" + uid.replace(".", "")


def instance_dataset(sop_uid: str) -> Dataset:
    """The dataset of one fixture instance (every indexed attribute set)."""
    for series_uid, (study_uid, series_attrs, instances) in SERIES.items():
        for uid, sop_class, number, _storage in instances:
            if uid != sop_uid:
                continue
            patient_id, study_attrs = STUDIES[study_uid]
            ds = Dataset()
            ds.PatientID = patient_id
            for key, value in {**PATIENTS[patient_id], **study_attrs, **series_attrs}.items():
                setattr(ds, key, value)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, uid
            ds.SOPClassUID, ds.InstanceNumber = sop_class, number
            ds.ContentDate, ds.ContentTime = study_attrs["StudyDate"], study_attrs["StudyTime"]
            if sop_class != SR:
                ds.Rows = ds.Columns = 256
                ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 12, 0
                ds.PhotometricInterpretation = "MONOCHROME2"
            return ds
    raise KeyError(sop_uid)


def store_all(db: Database) -> None:
    with db.session() as session:
        for (_study, _attrs, instances) in SERIES.values():
            for uid, _cls, _number, storage in instances:
                extra: dict = {"storage": storage, "transfer_syntax_uid": "1.2.840.10008.1.2.1"}
                if storage != "none":
                    extra["original_pixel_bytes"] = 256 * 256 * 2
                if storage == "cae":
                    extra.update(derived_sop_instance_uid=derived(uid), codec_model_id="cae-test",
                                 codec_sha256="ab" * 32, codec_architecture="test-cae")
                if uid == QUALITY_GATE_FALLBACK:
                    extra["fallback_reason"] = "quality-gate: PSNR 28.1 dB < 30.0 dB"
                record = record_from_dataset(instance_dataset(uid), **extra)
                pixels = None if storage == "none" else (b"c" * 100 if storage == "cae" else b"l" * 1000)
                assert store_instance(session, record, b"m" * 10, pixels)[0] == "stored"
