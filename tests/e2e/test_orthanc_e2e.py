"""Orthanc (Debian's package, installed by ``scripts/setup test``) as a client of the archive.

Orthanc queries the archive (study level, then instance level without SeriesInstanceUID, as its UI does),
C-MOVEs the study into itself, and sends back what it received. Orthanc accepts every transfer syntax, so
the move delivers each instance as stored; its copies must decode to the pixels of the files that were
sent (a CAE copy: declared lossy, above the quality floor). Skipped only when Orthanc is not installed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from pacs_cae.testing import dcmtk
from pacs_cae.testing.server_process import free_port
from tests.e2e.syntax_archive import Stored, check, open_archive
from tests.e2e.syntax_corpus import build

pytestmark = pytest.mark.e2e

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_AET = "ORTHANC"


@dataclass
class Orthanc:
    """A private Orthanc: its own storage, HTTP (REST, local only) and DICOM ports; stopped by pid."""

    proc: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    log: Path

    def rest(self, method: str, path: str, body: Any = None, timeout: float = 300) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Orthanc {method} {path}: HTTP {exc.code} {exc.read()[:2000]!r}\n"
                                 f"{self.log.read_text(errors='replace')[-3000:]}") from None
        return json.loads(raw) if raw[:1] in (b"{", b"[") else raw


def _start_orthanc(work: Path, pacs_port: int, dicom_port: int) -> Orthanc:
    http_port = free_port()
    config = {
        "Name": "pacs-cae-e2e", "StorageDirectory": str(work / "orthanc-db"), "IndexDirectory": str(work / "orthanc-db"),
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomAet": ORTHANC_AET, "DicomPort": dicom_port, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True, "DicomCheckModalityHost": False, "UnknownSopClassAccepted": True,
        "DicomModalities": {"pacs": ["PACSCAE", "127.0.0.1", pacs_port]},
        "Plugins": [], "DicomScuTimeout": 60, "SaveJobs": False, "StableAge": 1,
    }
    path = work / "orthanc.json"
    path.write_text(json.dumps(config))
    log = work / "orthanc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([ORTHANC, str(path)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "TCP_NODELAY": "1"})
    orthanc = Orthanc(proc, http_port, dicom_port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"Orthanc exited {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            orthanc.rest("GET", "/system", timeout=5)
            return orthanc
        except (AssertionError, OSError):
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"Orthanc did not answer:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def with_orthanc(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stored,
                                                                                                        Orthanc]]:
    if not (shutil.which(ORTHANC) or Path(ORTHANC).exists()):
        pytest.skip("Orthanc is not installed (scripts/setup test installs Debian's 'orthanc')")
    work = tmp_path_factory.mktemp("orthanc")
    corpus = build(work / "in", full=False)
    orthanc_port = free_port()
    # the archive's [remotes] names Orthanc; Orthanc's DicomModalities names the archive
    with open_archive(work, module_database_url, corpus, {ORTHANC_AET: orthanc_port}) as stored:
        orthanc = _start_orthanc(work, stored.server.port, orthanc_port)
        try:
            yield stored, orthanc
        finally:
            orthanc.proc.send_signal(signal.SIGTERM)
            try:
                orthanc.proc.wait(60)
            except subprocess.TimeoutExpired:
                orthanc.proc.kill()


def _query(orthanc: Orthanc, level: str, query: dict[str, str]) -> list[dict[str, Any]]:
    started = orthanc.rest("POST", "/modalities/pacs/query", {"Level": level, "Query": query})
    answers = orthanc.rest("GET", f"{started['Path']}/answers?expand&simplify")
    return list(answers)


def test_orthanc_queries_the_archive(with_orthanc: tuple[Stored, Orthanc]) -> None:
    stored, orthanc = with_orthanc
    studies = _query(orthanc, "Study", {"StudyInstanceUID": stored.study, "PatientID": "", "StudyDate": ""})
    assert [a["StudyInstanceUID"] for a in studies] == [stored.study]
    instances = _query(orthanc, "Instance", {"StudyInstanceUID": stored.study, "SOPInstanceUID": ""})
    assert sorted(a["SOPInstanceUID"] for a in instances) == sorted(stored.served.values())


def test_orthanc_moves_the_study_into_itself_and_sends_it_back(with_orthanc: tuple[Stored, Orthanc]) -> None:
    stored, orthanc = with_orthanc
    job = orthanc.rest("POST", "/modalities/pacs/move", {
        "Level": "Study", "Resources": [{"StudyInstanceUID": stored.study}], "TargetAet": ORTHANC_AET,
        "Synchronous": True})
    assert isinstance(job, dict), job
    received = {}
    for instance_id in orthanc.rest("GET", "/instances"):
        ds = dcmread(io.BytesIO(orthanc.rest("GET", f"/instances/{instance_id}/file")))
        received[str(ds.SOPInstanceUID)] = ds
    assert set(received) == set(stored.served.values()), "Orthanc did not receive every instance"
    for f in stored.corpus:
        own = {f.stored_syntax} if not stored.lossy_copy[f.uid] else {f.stored_syntax, *_uncompressed()}
        check(stored, f, received[stored.served[f.uid]], own, "C-MOVE into Orthanc")

    (study_id,) = orthanc.rest("GET", "/studies")
    sent = orthanc.rest("POST", "/modalities/pacs/store", {"Resources": [study_id], "Synchronous": True})
    assert sent.get("FailedInstancesCount", 0) == 0 and sent.get("InstancesCount") == len(received), sent
    # what came back is served like the original: the same pixels to a C-GET
    out = stored.work / "get-after-orthanc"
    out.mkdir()
    dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-S", "-od", str(out),
                         *dcmtk.keys({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": stored.study}),
                         "127.0.0.1", str(stored.server.port)], timeout=300)
    after = {str(ds.SOPInstanceUID): ds for ds in dcmtk.read_dir(out)}
    for f in stored.corpus:
        if not stored.lossy_copy[f.uid]:
            check(stored, f, after[f.uid], set(_uncompressed()), "C-GET after Orthanc sent it back")


def _uncompressed() -> list[Any]:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    return [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
