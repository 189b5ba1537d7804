"""``locate``: what C-GET / C-MOVE will send for an identifier."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from query_data import derived

from pacs_cae.archive.query import QueryError, locate


def _locate(db, model, level, lossy_uid="derive", **keys):
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(identifier, key, value)
    with db.session(readonly=True) as session:
        return locate(session, model, identifier, lossy_uid=lossy_uid)


def test_patient_level(archive_db):
    refs = _locate(archive_db, "P", "PATIENT", PatientID="PID1")
    assert sorted(r.sop_instance_uid for r in refs) == [
        "1.2.3.1.1.1", "1.2.3.1.1.2", "1.2.3.1.1.3", "1.2.3.1.2.1", "1.2.3.2.1.1", "1.2.3.2.1.2"]


def test_study_level_uid_list(archive_db):
    refs = _locate(archive_db, "S", "STUDY", StudyInstanceUID="1.2.3.2\\1.2.3.3")
    assert [r.sop_instance_uid for r in refs] == ["1.2.3.2.1.1", "1.2.3.2.1.2", "1.2.3.3.1.1"]
    assert [r.storage for r in refs] == ["cae", "cae", "lossless"]
    assert refs[0].served_uid == derived("1.2.3.2.1.1") and refs[2].served_uid == "1.2.3.3.1.1"
    assert refs[2].sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert refs[2].transfer_syntax_uid == "1.2.840.10008.1.2.1"


def test_series_level_with_upper_keys(archive_db):
    refs = _locate(archive_db, "P", "SERIES", PatientID="PID1", StudyInstanceUID="1.2.3.1",
                   SeriesInstanceUID="1.2.3.1.2")
    assert [(r.sop_instance_uid, r.storage) for r in refs] == [("1.2.3.1.2.1", "none")]
    assert _locate(archive_db, "P", "SERIES", PatientID="PID2", SeriesInstanceUID="1.2.3.1.2") == []


@pytest.mark.parametrize("lossy_uid", ["derive", "keep"])
def test_image_level_by_either_uid(archive_db, lossy_uid):
    by_original = _locate(archive_db, "S", "IMAGE", lossy_uid, SOPInstanceUID="1.2.3.1.1.1\\1.2.3.1.1.3")
    by_derived = _locate(archive_db, "S", "IMAGE", lossy_uid, SOPInstanceUID=derived("1.2.3.1.1.1"))
    assert [r.sop_instance_uid for r in by_original] == ["1.2.3.1.1.1", "1.2.3.1.1.3"]
    assert [r.sop_instance_uid for r in by_derived] == ["1.2.3.1.1.1"]
    expected = derived("1.2.3.1.1.1") if lossy_uid == "derive" else "1.2.3.1.1.1"
    assert by_original[0].served_uid == by_derived[0].served_uid == expected
    assert by_original[1].served_uid == "1.2.3.1.1.3"


@pytest.mark.parametrize(
    ("model", "level", "keys"),
    [
        ("S", "PATIENT", {"PatientID": "PID1"}),  # no PATIENT level in Study Root
        ("S", "STUDY", {}),  # missing unique key
        ("S", "STUDY", {"StudyInstanceUID": ""}),  # universal
        ("S", "STUDY", {"StudyInstanceUID": "1.2.3.*"}),  # wildcard
        ("P", "PATIENT", {"PatientID": "PID?"}),
        ("S", "SERIES", {"StudyInstanceUID": "1.2.3.1"}),
    ],
)
def test_invalid_retrieve_identifiers(archive_db, model, level, keys):
    with pytest.raises(QueryError) as info:
        _locate(archive_db, model, level, **keys)
    assert info.value.status == 0xA900


def test_unknown_uid_locates_nothing(archive_db):
    assert _locate(archive_db, "S", "STUDY", StudyInstanceUID="9.9.9") == []
