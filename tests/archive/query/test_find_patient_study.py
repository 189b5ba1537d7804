"""C-FIND at PATIENT and STUDY level, Patient Root and Study Root, with every matching rule."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from pacs_cae.archive.query import QueryError, find


def _values(responses, keyword):
    return sorted(str(r.get(keyword)) for r in responses)


def test_patient_level_universal_returns_every_patient_once(query):
    responses = query("P", "PATIENT", PatientID="", PatientName="")
    assert _values(responses, "PatientID") == ["PID1", "PID2", "PID3"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Doe^John", ["PID1"]),  # single value
        ("doe^john", ["PID1"]),  # PN is case-insensitive (documented)
        ("DOE*", ["PID1"]),  # wildcard *
        ("?oe^John", ["PID1"]),  # wildcard ?
        ("*a*", ["PID2", "PID3"]),
        ("*", ["PID1", "PID2", "PID3"]),  # universal
        ("Doe", []),  # no implicit prefix matching
        ("Müller^Hans", ["PID3"]),
    ],
)
def test_patient_name_matching(query, name, expected):
    assert _values(query("P", "PATIENT", PatientID="", PatientName=name), "PatientID") == expected


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"PatientID": "PID2"}, ["PID2"]),
        ({"PatientID": "PID?"}, ["PID1", "PID2", "PID3"]),
        ({"PatientID": "pid1"}, []),  # non-PN text is case-sensitive on both backends
        ({"PatientID": "PID1\\PID3"}, ["PID1", "PID3"]),  # list
        ({"PatientBirthDate": "19800101-"}, ["PID2"]),
        ({"PatientBirthDate": "-19700101"}, ["PID1", "PID3"]),
        ({"PatientBirthDate": "19650101-19751231"}, ["PID1"]),
        ({"PatientBirthDate": "19851231"}, ["PID2"]),
        ({"PatientSex": "M"}, ["PID1", "PID3"]),
        ({"IssuerOfPatientID": "HOSP"}, ["PID2"]),
        ({"PatientSex": "M", "PatientBirthDate": "19650101-"}, ["PID1"]),  # keys combine with AND
    ],
)
def test_patient_level_keys(query, keys, expected):
    assert _values(query("P", "PATIENT", **{"PatientID": "", **keys}), "PatientID") == expected


def test_patient_level_returns_exactly_the_requested_keys_and_counts(query):
    (doe,) = query("P", "PATIENT", PatientID="PID1", PatientName="", PatientSex="", InstitutionName="",
                   NumberOfPatientRelatedStudies="", NumberOfPatientRelatedSeries="",
                   NumberOfPatientRelatedInstances="")
    assert {e.keyword for e in doe} == {
        "QueryRetrieveLevel", "PatientID", "PatientName", "PatientSex", "InstitutionName",
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances",
    }
    assert doe.QueryRetrieveLevel == "PATIENT"
    assert str(doe.PatientName) == "Doe^John" and doe.PatientSex == "M"
    assert doe.InstitutionName in (None, "")  # not indexed: returned empty
    assert (doe.NumberOfPatientRelatedStudies, doe.NumberOfPatientRelatedSeries,
            doe.NumberOfPatientRelatedInstances) == (2, 3, 6)


def test_non_ascii_values_declare_utf8(query):
    (muller,) = query("P", "PATIENT", PatientID="PID3", PatientName="")
    assert muller.SpecificCharacterSet == "ISO_IR 192"
    (doe,) = query("P", "PATIENT", PatientID="PID1", PatientName="")
    assert "SpecificCharacterSet" not in doe


def test_study_root_has_no_patient_level(query):
    with pytest.raises(QueryError) as info:
        query("S", "PATIENT", PatientID="")
    assert info.value.status == 0xA900


@pytest.mark.parametrize("level", [None, "", "FRAME"])
def test_missing_or_unknown_level_is_rejected(archive_db, level):
    identifier = Dataset()
    if level is not None:
        identifier.QueryRetrieveLevel = level
    identifier.PatientID = ""
    with archive_db.session(readonly=True) as session, pytest.raises(QueryError) as info:
        find(session, "P", identifier, lossy_uid="derive")
    assert info.value.status == 0xA900


def test_patient_root_study_level_needs_the_patient_id(query):
    with pytest.raises(QueryError) as info:
        query("P", "STUDY", StudyInstanceUID="")
    assert info.value.status == 0xA900
    with pytest.raises(QueryError):
        query("P", "STUDY", PatientID="PID*", StudyInstanceUID="")
    assert _values(query("P", "STUDY", PatientID="PID1", StudyInstanceUID=""), "StudyInstanceUID") == [
        "1.2.3.1", "1.2.3.2"]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, ["1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4"]),
        ({"StudyDate": "20240115"}, ["1.2.3.1"]),
        ({"StudyDate": "20240101-20240201"}, ["1.2.3.1"]),
        ({"StudyDate": "-20231231"}, ["1.2.3.3", "1.2.3.4"]),
        ({"StudyDate": "20240115-"}, ["1.2.3.1", "1.2.3.2"]),
        ({"StudyDate": "2024.01.15"}, ["1.2.3.1"]),  # ACR-NEMA date form
        ({"StudyTime": "1000-1100"}, ["1.2.3.1"]),
        ({"StudyTime": "1545-"}, ["1.2.3.2"]),
        ({"StudyTime": "-0800"}, ["1.2.3.3", "1.2.3.4"]),  # the hour 08:00 with less precision
        ({"StudyTime": "154500"}, ["1.2.3.2"]),  # matches 154500.123 at the precision given
        ({"StudyTime": "10:15:00"}, ["1.2.3.1"]),  # ACR-NEMA time form
        ({"StudyInstanceUID": "1.2.3.1\\1.2.3.3"}, ["1.2.3.1", "1.2.3.3"]),  # UID list
        ({"StudyInstanceUID": "1.2.3.2"}, ["1.2.3.2"]),
        ({"AccessionNumber": "ACC_3%"}, ["1.2.3.3"]),  # LIKE metacharacters are literal
        ({"AccessionNumber": "ACC_*"}, ["1.2.3.3"]),
        ({"AccessionNumber": "ACC?"}, ["1.2.3.1", "1.2.3.2", "1.2.3.4"]),
        ({"StudyDescription": "Brain*"}, ["1.2.3.1", "1.2.3.4"]),
        ({"StudyID": "S2"}, ["1.2.3.2"]),
        ({"ReferringPhysicianName": "ref^*"}, ["1.2.3.1"]),
        ({"PatientName": "smith*"}, ["1.2.3.3"]),  # patient keys on Study Root's STUDY level
        ({"PatientID": "PID1"}, ["1.2.3.1", "1.2.3.2"]),
        ({"ModalitiesInStudy": "CT"}, ["1.2.3.3"]),
        ({"ModalitiesInStudy": "MR"}, ["1.2.3.1", "1.2.3.2", "1.2.3.4"]),
        ({"ModalitiesInStudy": "SR\\CT"}, ["1.2.3.1", "1.2.3.3"]),
        ({"SOPClassesInStudy": "1.2.840.10008.5.1.4.1.1.2"}, ["1.2.3.3"]),
        ({"StudyDate": "2024*"}, None),  # wildcards are not allowed on dates
    ],
)
def test_study_root_study_level_matching(query, keys, expected):
    if expected is None:
        with pytest.raises(QueryError) as info:
            query("S", "STUDY", StudyInstanceUID="", **keys)
        assert 0xC000 <= info.value.status <= 0xCFFF
        return
    identifier = {"StudyInstanceUID": "", **keys}
    assert _values(query("S", "STUDY", **identifier), "StudyInstanceUID") == expected


@pytest.mark.parametrize("bad", [{"StudyDate": "2024-13"}, {"StudyDate": "yesterday"}, {"StudyTime": "25h"}])
def test_unparsable_values_are_unable_to_process(query, bad):
    with pytest.raises(QueryError) as info:
        query("S", "STUDY", StudyInstanceUID="", **bad)
    assert info.value.status == 0xC000


def test_study_level_values_and_counts(query):
    (study,) = query("S", "STUDY", StudyInstanceUID="1.2.3.1", StudyDate="", StudyTime="", AccessionNumber="",
                     PatientName="", PatientID="", ModalitiesInStudy="", SOPClassesInStudy="",
                     NumberOfStudyRelatedSeries="", NumberOfStudyRelatedInstances="", StudyDescription="",
                     ReferringPhysicianName="")
    assert (study.StudyDate, study.StudyTime, study.AccessionNumber) == ("20240115", "101500", "ACC1")
    assert str(study.PatientName) == "Doe^John" and study.PatientID == "PID1"
    assert list(study.ModalitiesInStudy) == ["MR", "SR"]
    assert list(study.SOPClassesInStudy) == ["1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.88.11"]
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (2, 4)
    assert str(study.ReferringPhysicianName) == "Ref^Alice"
    assert "Modality" not in study and "SeriesInstanceUID" not in study


def test_keys_below_the_level_are_returned_empty_and_not_matched(query):
    responses = query("S", "STUDY", StudyInstanceUID="", Modality="CT", SeriesInstanceUID="9.9")
    assert len(responses) == 4
    assert all(r.Modality in (None, "") and r.SeriesInstanceUID in (None, "") for r in responses)


def test_response_is_encodable(query):
    """Every response must survive pydicom's encoder, as pynetdicom will send it."""
    from io import BytesIO

    from pynetdicom.dsutils import decode, encode

    for response in query("S", "STUDY", StudyInstanceUID="", PatientName="", ModalitiesInStudy="",
                          NumberOfStudyRelatedInstances="", StudyDate="", ReferencedStudySequence=[]):
        raw = encode(response, True, True)
        assert raw is not None
        echoed = decode(BytesIO(raw), True, True)
        assert echoed.StudyInstanceUID == response.StudyInstanceUID
        assert echoed.ReferencedStudySequence == []
