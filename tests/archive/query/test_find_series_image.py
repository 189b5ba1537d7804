"""C-FIND at SERIES and IMAGE level in both roots, and the served (lossy) SOP Instance UID."""

from __future__ import annotations

import pytest
from query_data import derived

from pacs_cae.archive.query import QueryError, find


def _values(responses, keyword):
    return sorted(str(r.get(keyword)) for r in responses)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, ["1.2.3.1.1", "1.2.3.1.2"]),
        ({"Modality": "MR"}, ["1.2.3.1.1"]),
        ({"Modality": "SR\\MR"}, ["1.2.3.1.1", "1.2.3.1.2"]),
        ({"SeriesNumber": "2"}, ["1.2.3.1.2"]),
        ({"SeriesNumber": "1\\2"}, ["1.2.3.1.1", "1.2.3.1.2"]),
        ({"SeriesDescription": "T1*"}, ["1.2.3.1.1"]),
        ({"SeriesDescription": "t1*"}, []),
        ({"BodyPartExamined": "BRAIN"}, ["1.2.3.1.1"]),
        ({"SeriesInstanceUID": "1.2.3.1.2\\1.2.3.3.1"}, ["1.2.3.1.2"]),  # restricted to the named study
        ({"StudyDate": "20240115"}, ["1.2.3.1.1", "1.2.3.1.2"]),  # upper-level keys also match
    ],
)
def test_study_root_series_level(query, keys, expected):
    responses = query("S", "SERIES", StudyInstanceUID="1.2.3.1", **{"SeriesInstanceUID": "", **keys})
    assert _values(responses, "SeriesInstanceUID") == expected


def test_series_level_values_and_counts(query):
    (series,) = query("S", "SERIES", StudyInstanceUID="1.2.3.1", SeriesInstanceUID="1.2.3.1.1", Modality="",
                      SeriesNumber="", SeriesDescription="", NumberOfSeriesRelatedInstances="",
                      NumberOfStudyRelatedInstances="")
    assert (series.Modality, series.SeriesNumber, series.SeriesDescription) == ("MR", 1, "T1 axial")
    assert series.NumberOfSeriesRelatedInstances == 3
    assert series.NumberOfStudyRelatedInstances == 4
    assert series.StudyInstanceUID == "1.2.3.1"


def test_series_level_requires_upper_unique_keys(query):
    with pytest.raises(QueryError):
        query("S", "SERIES", SeriesInstanceUID="")  # no StudyInstanceUID
    with pytest.raises(QueryError):
        query("S", "SERIES", StudyInstanceUID="*", SeriesInstanceUID="")
    with pytest.raises(QueryError):
        query("P", "SERIES", StudyInstanceUID="1.2.3.1", SeriesInstanceUID="")  # no PatientID
    responses = query("P", "SERIES", PatientID="PID1", StudyInstanceUID="1.2.3.2", SeriesInstanceUID="")
    assert _values(responses, "SeriesInstanceUID") == ["1.2.3.2.1"]
    assert query("P", "SERIES", PatientID="PID2", StudyInstanceUID="1.2.3.2", SeriesInstanceUID="") == []


def test_bad_integer_is_unable_to_process(archive_db):
    """An IS value pydicom could not parse arrives as text (as from the network) and is refused."""
    import struct
    from io import BytesIO

    from pynetdicom.dsutils import decode

    raw = struct.pack("<HHI", 0x0020, 0x0011, 4) + b"one "
    identifier = decode(BytesIO(raw), True, True)
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = "1.2.3.1"
    with archive_db.session(readonly=True) as session, pytest.raises(QueryError) as info:
        list(find(session, "S", identifier))
    assert info.value.status == 0xC000


def _image(query, model="S", lossy_uid="derive", **keys):
    upper = {"StudyInstanceUID": "1.2.3.1", "SeriesInstanceUID": "1.2.3.1.1"}
    if model == "P":
        upper["PatientID"] = "PID1"
    return query(model, "IMAGE", lossy_uid=lossy_uid, **{**upper, "SOPInstanceUID": "", **keys})


@pytest.mark.parametrize("model", ["P", "S"])
def test_image_level_answers_with_the_served_uid(query, model):
    responses = _image(query, model, InstanceNumber="", SOPClassUID="")
    assert _values(responses, "SOPInstanceUID") == sorted(
        [derived("1.2.3.1.1.1"), derived("1.2.3.1.1.2"), "1.2.3.1.1.3"])
    assert {r.SOPClassUID for r in responses} == {"1.2.840.10008.5.1.4.1.1.4"}
    kept = _image(query, model, lossy_uid="keep")
    assert _values(kept, "SOPInstanceUID") == ["1.2.3.1.1.1", "1.2.3.1.1.2", "1.2.3.1.1.3"]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"SOPInstanceUID": "1.2.3.1.1.1"}, [derived("1.2.3.1.1.1")]),  # the received UID still matches
        ({"SOPInstanceUID": derived("1.2.3.1.1.2")}, [derived("1.2.3.1.1.2")]),
        ({"SOPInstanceUID": f"1.2.3.1.1.3\\{derived('1.2.3.1.1.1')}"}, sorted([derived("1.2.3.1.1.1"), "1.2.3.1.1.3"])),
        ({"InstanceNumber": "3"}, ["1.2.3.1.1.3"]),
        ({"InstanceNumber": "1\\3"}, sorted([derived("1.2.3.1.1.1"), "1.2.3.1.1.3"])),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, []),
        ({"ContentDate": "20240101-20240131", "InstanceNumber": "2"}, [derived("1.2.3.1.1.2")]),
        ({"Rows": "256", "InstanceNumber": "3"}, ["1.2.3.1.1.3"]),
        ({"PatientName": "doe*", "InstanceNumber": "3"}, ["1.2.3.1.1.3"]),
        ({"PatientName": "smith*"}, []),
    ],
)
def test_image_level_matching(query, keys, expected):
    assert _values(_image(query, **keys), "SOPInstanceUID") == expected


def test_image_level_without_series_uid_spans_the_study(query):
    """Study Root IMAGE level with no SeriesInstanceUID (Orthanc's query UI sends it): every instance of the
    study, not A900; the study key is still required."""
    responses = query("S", "IMAGE", StudyInstanceUID="1.2.3.1", SeriesInstanceUID="", SOPInstanceUID="")
    assert _values(responses, "SOPInstanceUID") == sorted(
        [derived("1.2.3.1.1.1"), derived("1.2.3.1.1.2"), "1.2.3.1.1.3", "1.2.3.1.2.1"])
    with pytest.raises(QueryError):
        query("S", "IMAGE", SOPInstanceUID="")


def test_image_level_one_response_per_instance(query):
    responses = query("P", "IMAGE", PatientID="PID1", StudyInstanceUID="1.2.3.2", SeriesInstanceUID="1.2.3.2.1",
                      SOPInstanceUID="", InstanceNumber="", NumberOfSeriesRelatedInstances="")
    assert [r.InstanceNumber for r in responses] == [1, 2]
    assert all(r.NumberOfSeriesRelatedInstances == 2 for r in responses)
    assert all(r.QueryRetrieveLevel == "IMAGE" for r in responses)
