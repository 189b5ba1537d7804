"""End to end: `pacs-cae serve` as a real process, driven by DCMTK, on SQLite and PostgreSQL.

The tests share one server and one ingest per backend (see conftest.py) and run in file order; the last
one stops the server with SIGTERM.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
from pydicom.dataset import Dataset

from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import echo
from tests.e2e.compare import check_lossless, check_lossy
from tests.e2e.scenario import MOVE_AET, Scenario, write_datasets

pytestmark = pytest.mark.e2e

ROOTS = ["P", "S"]


def _find(s: Scenario, root: str, keys: dict[str, str], name: str) -> list[Dataset]:
    return dcmtk.find(s.server.port, root, keys, s.work / "find" / name)


def _served_uid(s: Scenario, ds: Dataset) -> str:
    """The UID the archive answers and delivers: derived for the CAE slices, the original otherwise."""
    from pacs_cae.dicom.uids import derive_lossy_uid

    uid = str(ds.SOPInstanceUID)
    return str(derive_lossy_uid(uid, s.model_id)) if s.is_cae(ds) else uid


def _check_retrieved(s: Scenario, retrieved: list[Dataset], expected: list[Dataset]) -> None:
    """Every expected object arrived once; CAE slices lossy-declared above the floor, the rest byte-exact."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in retrieved}
    assert len(by_uid) == len(retrieved) == len(expected), sorted(by_uid)
    assert set(by_uid) == {_served_uid(s, ds) for ds in expected}
    for original in expected:
        got = by_uid[_served_uid(s, original)]
        if s.is_cae(original):
            check_lossy(original, got, model_id=s.model_id, floor_db=s.floor_db)
        else:
            check_lossless(original, got)


def test_schema_at_start(scenario: Scenario) -> None:
    """SQLite: serve migrated the empty database itself. PostgreSQL: serve refused until `db upgrade`."""
    if scenario.database_url.startswith("sqlite"):
        from pacs_cae.store.db import Database
        from pacs_cae.store.migrate import head_revision

        assert scenario.refused is None
        db = Database(scenario.database_url)
        try:
            assert db.current_revision() == head_revision()
        finally:
            db.dispose()
        return
    assert scenario.refused is not None
    output = scenario.refused.stdout + scenario.refused.stderr
    assert scenario.refused.returncode != 0, output
    assert "out-of-date" in output and "pacs-cae db upgrade" in output, output


def test_echo(scenario: Scenario) -> None:
    assert echo(scenario.server.port).returncode == 0


def test_storescu_stored_everything(scenario: Scenario) -> None:
    assert scenario.store.returncode == 0, scenario.store.stdout + scenario.store.stderr + scenario.server.log()


@pytest.mark.parametrize("root", ROOTS)
def test_find_counts_at_every_level(scenario: Scenario, root: str) -> None:
    s = scenario
    series_a = {str(ds.SeriesInstanceUID) for ds in s.study_a_objects}
    if root == "P":
        patients = _find(s, root, {"QueryRetrieveLevel": "PATIENT", "PatientID": "PCAE-*", "PatientName": "",
                                   "NumberOfPatientRelatedStudies": "", "NumberOfPatientRelatedInstances": ""},
                         "patients")
        by_id = {str(p.PatientID): p for p in patients}
        assert set(by_id) == {"PCAE-A", "PCAE-B"}
        assert str(by_id["PCAE-A"].PatientName) == "Alpha^Phantom"
        assert int(by_id["PCAE-A"].NumberOfPatientRelatedStudies) == 1
        assert int(by_id["PCAE-A"].NumberOfPatientRelatedInstances) == len(s.study_a_objects)
        scope = {"PatientID": "PCAE-A"}
    else:
        studies = _find(s, root, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "StudyDate": "",
                                  "PatientID": ""}, "all-studies")
        assert {str(d.StudyInstanceUID) for d in studies} == {s.study_a, str(s.small_mr[0].StudyInstanceUID)}
        ranged = _find(s, root, {"QueryRetrieveLevel": "STUDY", "StudyDate": "20240101-20241231",
                                 "StudyInstanceUID": ""}, "range")
        assert [str(d.StudyInstanceUID) for d in ranged] == [s.study_a]
        scope = {}
    studies = _find(s, root, {**scope, "QueryRetrieveLevel": "STUDY", "StudyInstanceUID": s.study_a,
                              "AccessionNumber": "", "NumberOfStudyRelatedSeries": "",
                              "NumberOfStudyRelatedInstances": ""}, f"study-{root}")
    assert len(studies) == 1
    assert int(studies[0].NumberOfStudyRelatedSeries) == len(series_a)
    assert int(studies[0].NumberOfStudyRelatedInstances) == len(s.study_a_objects)
    series = _find(s, root, {**scope, "QueryRetrieveLevel": "SERIES", "StudyInstanceUID": s.study_a,
                             "SeriesInstanceUID": "", "Modality": "", "NumberOfSeriesRelatedInstances": ""},
                   f"series-{root}")
    assert {str(d.SeriesInstanceUID) for d in series} == series_a
    counts = {str(d.SeriesInstanceUID): int(d.NumberOfSeriesRelatedInstances) for d in series}
    assert counts[str(s.mr[0].SeriesInstanceUID)] == len(s.mr)
    assert sorted(str(d.Modality) for d in series) == sorted(["MR", "MR", "OT", "SR"])
    images = _find(s, root, {**scope, "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": s.study_a,
                             "SeriesInstanceUID": str(s.mr[0].SeriesInstanceUID), "SOPInstanceUID": "",
                             "InstanceNumber": ""}, f"images-{root}")
    assert sorted(int(d.InstanceNumber) for d in images) == list(range(1, len(s.mr) + 1))
    # IMAGE level answers with the UID that C-GET/C-MOVE deliver (derived for the CAE copies)
    assert {str(d.SOPInstanceUID) for d in images} == {_served_uid(s, ds) for ds in s.mr}
    # hierarchical IMAGE queries name their series; over all series of the study they find every object
    per_series = [
        _find(s, root, {**scope, "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": s.study_a,
                        "SeriesInstanceUID": uid, "SOPInstanceUID": "", "SOPClassUID": ""}, f"img-{root}-{uid}")
        for uid in sorted(series_a)
    ]
    found = {str(d.SOPInstanceUID) for matches in per_series for d in matches}
    assert found == {_served_uid(s, ds) for ds in s.study_a_objects}
    assert sum(map(len, per_series)) == len(s.study_a_objects)


def test_get_study_returns_every_object(scenario: Scenario) -> None:
    s = scenario
    out = s.work / "get-study"
    out.mkdir()
    dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-S", "-od", str(out),
                         *dcmtk.keys({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": s.study_a}),
                         "127.0.0.1", str(s.server.port)], timeout=300)
    _check_retrieved(s, dcmtk.read_dir(out), s.study_a_objects)


@pytest.mark.parametrize("level", ["PATIENT", "SERIES", "IMAGE"])
def test_get_at_other_levels(scenario: Scenario, level: str) -> None:
    s = scenario
    small = s.small_mr
    keys = {"QueryRetrieveLevel": level, "PatientID": "PCAE-B"}
    expected = small
    if level in ("SERIES", "IMAGE"):
        keys.update(StudyInstanceUID=str(small[0].StudyInstanceUID), SeriesInstanceUID=str(small[0].SeriesInstanceUID))
    if level == "IMAGE":  # a retrieve naming the ORIGINAL SOP Instance UID still works
        keys["SOPInstanceUID"] = str(small[1].SOPInstanceUID)
        expected = [small[1]]
    out = s.work / f"get-{level}"
    out.mkdir()
    dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-P" if level == "PATIENT" else "-S", "-od",
                         str(out), *dcmtk.keys(keys), "127.0.0.1", str(s.server.port)], timeout=300)
    _check_retrieved(s, dcmtk.read_dir(out), expected)


def test_move_study_to_configured_storescp(scenario: Scenario) -> None:
    s = scenario
    out = s.work / "moved"
    out.mkdir()
    scp = subprocess.Popen([dcmtk.tool("storescp"), "-aet", MOVE_AET, "-od", str(out), str(s.move_port)],
                           env=dcmtk.environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        proc = dcmtk.run("movescu", ["-d", "-aec", "PACSCAE", "-aet", "E2ESCU", "-aem", MOVE_AET, "-S",
                                     *dcmtk.keys({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": s.study_a}),
                                     "127.0.0.1", str(s.server.port)], timeout=300)
    finally:
        scp.terminate()
        scp.wait(10)
    output = proc.stdout + proc.stderr
    # pending responses carry the sub-operation counts, the final one reports them all completed
    assert output.count("Received Move Response") >= len(s.study_a_objects), output
    assert re.search(rf"Completed Suboperations\s*:\s*{len(s.study_a_objects)}\b", output), output
    _check_retrieved(s, dcmtk.read_dir(out), s.study_a_objects)


def test_move_to_unknown_destination_is_a801(scenario: Scenario) -> None:
    s = scenario
    proc = dcmtk.run("movescu", ["-v", "-aec", "PACSCAE", "-aet", "E2ESCU", "-aem", "NOBODY", "-S",
                                 *dcmtk.keys({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": s.study_a}),
                                 "127.0.0.1", str(s.server.port)], check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "MoveDestinationUnknown" in output or "a801" in output.lower(), output


def test_bad_store_is_refused_and_server_keeps_serving(scenario: Scenario) -> None:
    """An object the archive cannot index (no Study/Series Instance UID) gets a C0xx status, nothing is kept."""
    s = scenario
    bad = make_mr_series(1, 64, 64, patient_id="PCAE-BAD", patient_name="Bad^Object")[0]
    del bad.StudyInstanceUID
    del bad.SeriesInstanceUID
    (path,) = write_datasets([bad], s.work / "bad")
    proc = dcmtk.run("storescu", ["-d", "-aec", "PACSCAE", "-aet", "E2ESCU", "127.0.0.1", str(s.server.port),
                                  str(path)], check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    statuses = re.findall(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", output)
    assert statuses and all(0xC000 <= int(st, 16) <= 0xCFFF for st in statuses), output
    assert s.server.alive()
    assert echo(s.server.port).returncode == 0
    assert _find(s, "P", {"QueryRetrieveLevel": "PATIENT", "PatientID": "PCAE-BAD"}, "bad") == []
    assert "C-STORE" in s.server.log() and "refused" in s.server.log()


def test_stats_json_counts_what_was_stored(scenario: Scenario) -> None:
    s = scenario
    proc = s.cli("stats", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = json.loads(proc.stdout)
    everything = [*s.study_a_objects, *s.small_mr]
    assert stats["patients"] == 2
    assert stats["studies"] == 2
    assert stats["series"] == len({str(ds.SeriesInstanceUID) for ds in everything})
    assert stats["instances"] == len(everything)
    def pixel_bytes(datasets: list[Dataset]) -> int:
        return sum(len(ds.PixelData) for ds in datasets if "PixelData" in ds)

    cae = [*s.mr, *s.small_mr]
    assert stats["original_bytes"] == pixel_bytes(everything)
    assert stats["stored_bytes"] == stats["stored_pixel_bytes"] + stats["metadata_bytes"] > 0
    assert stats["ratio"] == pytest.approx(stats["original_bytes"] / stats["stored_bytes"], rel=1e-3)
    (cae_row,) = [row for row in stats["by_storage"] if row["storage"] == "cae"]
    assert cae_row["model"] == s.model_id
    assert cae_row["instances"] == len(cae)
    assert cae_row["original_bytes"] == pixel_bytes(cae)
    assert cae_row["stored_pixel_bytes"] < cae_row["original_bytes"]
    assert sum(row["instances"] for row in stats["by_storage"]) == len(everything)
    modality = {row["modality"]: row for row in stats["by_modality"]}
    assert {m: r["instances"] for m, r in modality.items()} == {"MR": len(cae) + 1, "OT": 1, "SR": 1}
    assert modality["SR"]["original_bytes"] == 0
    assert modality["OT"]["original_bytes"] == len(s.rgb.PixelData)
    assert re.sub(r"\D", "", str(stats["oldest_study_date"])) == "20230102"
    assert re.sub(r"\D", "", str(stats["newest_study_date"])) == "20240315"


def test_concurrent_associations_store_and_query(scenario: Scenario) -> None:
    """Three modalities storing at once (one thread per association, one shared codec batcher, one DB)."""
    s = scenario
    series = [make_mr_series(4, 64, 64, patient_id=f"PCAE-C{i}", patient_name=f"Conc^{i}", seed=10 + i)
              for i in range(3)]
    procs = []
    for i, datasets in enumerate(series):
        files = write_datasets(datasets, s.work / f"concurrent-{i}")
        procs.append(subprocess.Popen(
            [dcmtk.tool("storescu"), "-aec", "PACSCAE", "-aet", f"MODALITY{i}", "127.0.0.1", str(s.server.port),
             *map(str, files)], env=dcmtk.environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    for i, datasets in enumerate(series):
        found = _find(s, "S", {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": str(datasets[0].StudyInstanceUID),
                               "SeriesInstanceUID": "", "NumberOfSeriesRelatedInstances": ""}, f"concurrent-{i}")
        assert [int(d.NumberOfSeriesRelatedInstances) for d in found] == [4]


def test_sigterm_stops_cleanly(scenario: Scenario) -> None:
    server = scenario.server
    rc = server.stop(signal.SIGTERM, timeout=60)
    assert rc == 0, server.log()
    assert "Traceback" not in server.log(), server.log()
    assert not server.alive()
