"""Issue 9: a hostile or clumsy peer against a real `pacs-cae serve` (``--model none``), SQLite and PostgreSQL.

Every attack is made with a real peer: DCMTK, pynetdicom as a raw SCU, or a raw socket for what no toolkit
sends. After each one the server must still serve, and nothing stored may have moved, merged or changed.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pynetdicom import AE, _config, build_role
from pynetdicom.sop_class import (
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    Verification,
)

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import (
    AE_TITLE,
    ServerProcess,
    clean_environment,
    echo,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)

TRUSTED = "FIXER"  # server.replace_calling_aets


@dataclass
class Served:
    server: ServerProcess
    work: Path
    url: str

    @property
    def port(self) -> int:
        return self.server.port

    def stats(self) -> dict:
        out = subprocess.run([*pacs_cae_command(), "stats", "--json", "--config", str(self.server.config)],
                             cwd=self.work, capture_output=True, text=True, timeout=120, env=clean_environment(),
                             check=False)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture(scope="module")
def served(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    missing = dcmtk.missing_tools()
    if missing:
        pytest.fail(f"DCMTK tools not found: {missing}", pytrace=False)
    work = tmp_path_factory.mktemp("hostile")
    port = free_port()
    config = write_config(work / "pacs-cae.toml", data_dir=work / "data", port=port,
                          database_url=module_database_url, codec={"model": "none"}, remotes={},
                          server={"replace_calling_aets": [TRUSTED]})
    if not module_database_url.startswith("sqlite"):
        upgrade = subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], cwd=work,
                                 capture_output=True, text=True, timeout=180, env=clean_environment(), check=False)
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    server = start_server(work, config, port)
    try:
        yield Served(server, work, module_database_url)
    finally:
        server.stop()


def _scu(calling: str = "HOSTILE") -> AE:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(MRImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def store(port: int, *datasets: Dataset | str, calling: str = "HOSTILE") -> list[int]:
    """C-STORE each data set (or file path, sent as is) on one association; the statuses."""
    assoc = _scu(calling).associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def series(n: int, patient_id: str, name: str = "Crash^Test", **kwargs: object) -> list[FileDataset]:
    return make_mr_series(n, 64, 64, 12, patient_id=patient_id, patient_name=name, **kwargs)  # type: ignore[arg-type]


def find(served: Served, tmp: Path, level: str, **keys: str) -> list[Dataset]:
    root = "P" if level == "PATIENT" else "S"
    return dcmtk.find(served.port, root, {"QueryRetrieveLevel": level, **keys}, tmp / f"find-{time.time_ns()}")


def get_patient(served: Served, tmp: Path, patient_id: str) -> list[Dataset]:
    """A PATIENT-level C-GET with DCMTK getscu (Patient Root); what it wrote."""
    out = tmp / f"get-{time.time_ns()}"
    out.mkdir()
    dcmtk.run("getscu", ["-aec", AE_TITLE, "-aet", "E2ESCU", "-P", "-od", str(out),
                         *dcmtk.keys({"QueryRetrieveLevel": "PATIENT", "PatientID": patient_id}),
                         "127.0.0.1", str(served.port)], check=False)
    return dcmtk.read_dir(out)


def rejected(served: Served, reason: str) -> int:
    return int(served.stats()["rejected"]["by_reason"].get(reason, 0))


def assert_serving(served: Served) -> None:
    assert served.server.alive(), served.server.log()
    assert echo(served.port).returncode == 0, served.server.log()


# -- 1. patient identity ------------------------------------------------------------------------------------
def test_an_instance_with_another_patient_id_never_moves_the_study(served: Served, tmp_path: Path) -> None:
    a, a2 = series(2, "CRASHCT")
    b = series(1, "OTHER", study_uid=str(a.StudyInstanceUID), series_uid=str(a.SeriesInstanceUID))[0]
    before = rejected(served, "patient-conflict")
    assert store(served.port, a, a2) == [0x0000, 0x0000]
    assert store(served.port, b) == [0xC004]
    other_series = series(1, "OTHER", study_uid=str(a.StudyInstanceUID))[0]  # a new series in that study
    assert store(served.port, other_series) == [0xC004]
    assert rejected(served, "patient-conflict") == before + 2
    studies = find(served, tmp_path, "STUDY", PatientID="CRASHCT", StudyInstanceUID="")
    assert [s.StudyInstanceUID for s in studies] == [a.StudyInstanceUID]
    assert get_patient(served, tmp_path, "OTHER") == []
    got = get_patient(served, tmp_path, "CRASHCT")
    assert sorted(d.SOPInstanceUID for d in got) == sorted([a.SOPInstanceUID, a2.SOPInstanceUID])
    assert {d.PatientID for d in got} == {"CRASHCT"}
    assert "patient-conflict" in served.server.log()
    assert_serving(served)


def test_patients_without_an_id_are_never_merged(served: Served, tmp_path: Path) -> None:
    alice = series(1, "", "ALICE^A")[0]
    bob = series(1, "", "BOB^B")[0]
    assert store(served.port, alice, bob) == [0x0000, 0x0000]
    for name, study in (("ALICE*", alice.StudyInstanceUID), ("BOB*", bob.StudyInstanceUID)):
        found = find(served, tmp_path, "STUDY", PatientName=name, StudyInstanceUID="")
        assert [s.StudyInstanceUID for s in found] == [study], name


# -- 3. incomplete data sets ------------------------------------------------------------------------------
def _image(rows: int = 256, cols: int = 256, patient: str = "TRUNC") -> FileDataset:
    return series(1, patient)[0] if rows == 64 else make_mr_series(1, rows, cols, 12, patient_id=patient)[0]


def test_a_truncated_stream_is_refused_and_nothing_is_stored(served: Served, tmp_path: Path) -> None:
    ds = _image()  # 256 x 256 x 16 bit: a 131,072-byte Pixel Data value
    path = tmp_path / "full.dcm"
    ds.save_as(path, enforce_file_format=True)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[:-50_000])
    before = rejected(served, "incomplete")
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are, like the reporter did
    try:
        assert store(served.port, str(cut)) == [0xC003]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert rejected(served, "incomplete") == before + 1
    assert find(served, tmp_path, "IMAGE", StudyInstanceUID=str(ds.StudyInstanceUID),
                SeriesInstanceUID=str(ds.SeriesInstanceUID), SOPInstanceUID="") == []
    assert store(served.port, ds) == [0x0000]  # the whole object is then accepted
    assert_serving(served)


@pytest.mark.parametrize("damage", ["short pixel data", "rows zero", "columns missing", "bits allocated 0"])
def test_pixel_data_that_does_not_fit_the_image_is_refused(served: Served, tmp_path: Path, damage: str) -> None:
    ds = _image(512, 512)
    if damage == "short pixel data":
        ds.PixelData = b"\0" * 1000
    elif damage == "rows zero":
        ds.Rows = 0
    elif damage == "columns missing":
        del ds.Columns
    else:
        ds.BitsAllocated = 0
    assert store(served.port, ds) == [0xC003]
    assert find(served, tmp_path, "IMAGE", StudyInstanceUID=str(ds.StudyInstanceUID),
                SeriesInstanceUID=str(ds.SeriesInstanceUID), SOPInstanceUID="") == []


def test_missing_sop_instance_uid_is_c001_and_a_random_body_c0xx(served: Served, tmp_path: Path) -> None:
    ds = _image(64)
    del ds.SOPInstanceUID  # the file meta still names it, so pynetdicom fills the request from there
    path = tmp_path / "no-uid.dcm"
    ds.save_as(path, enforce_file_format=False)
    noise = tmp_path / "noise.dcm"
    good = _image(64)
    good.save_as(noise, enforce_file_format=True)
    raw = noise.read_bytes()
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")  # preamble, DICM, group length element
    noise.write_bytes(raw[:meta_end] + np.random.default_rng(9).bytes(4000))
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        statuses = store(served.port, str(path), str(noise))
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert statuses[0] == 0xC001
    assert 0xC000 <= statuses[1] <= 0xCFFF
    assert_serving(served)


# -- 6. duplicates ----------------------------------------------------------------------------------------
def test_resends_keep_the_first_copy_unless_the_caller_may_replace(served: Served, tmp_path: Path) -> None:
    first = _image(64, patient="DUP")
    changed = dcmread(io.BytesIO(_encoded(first)))
    changed.SeriesDescription = "changed by a second sender"
    assert store(served.port, first) == [0x0000]
    assert store(served.port, first) == [0x0000]  # identical: success, nothing rewritten
    assert store(served.port, changed) == [0xB000]  # other content: warning, first copy kept
    images = find(served, tmp_path, "SERIES", StudyInstanceUID=str(first.StudyInstanceUID),
                  SeriesDescription="")
    assert [s.SeriesDescription for s in images] == [first.SeriesDescription]
    got = get_patient(served, tmp_path, "DUP")
    assert [d.get("SeriesDescription") for d in got] == [first.SeriesDescription]
    assert store(served.port, changed, calling=TRUSTED) == [0x0000]  # a configured AE replaces
    got = get_patient(served, tmp_path, "DUP")
    assert [d.SeriesDescription for d in got] == ["changed by a second sender"]
    assert rejected(served, "duplicate-kept-first") >= 1


def _encoded(ds: FileDataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# -- 7. called AE title -----------------------------------------------------------------------------------
def test_a_wrong_called_ae_title_is_rejected(served: Served) -> None:
    wrong = dcmtk.run("echoscu", ["-aec", "SOMEONEELSE", "-aet", "E2ESCU", "127.0.0.1", str(served.port)],
                      check=False)
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stdout + wrong.stderr
    assert_serving(served)


# -- 4. PDU length, garbage, empty requests (raw sockets) -------------------------------------------------
def _established(port: int) -> tuple[object, socket.socket]:
    assoc = _scu("RAWPEER").associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    return assoc, assoc.dul.socket.socket  # type: ignore[union-attr]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _await(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_pdu_longer_than_the_negotiated_maximum_is_aborted(served: Served) -> None:
    rss_before = _rss_kb(served.server.proc.pid)
    sent = []
    peers = [_established(served.port) for _ in range(4)]
    for assoc, raw in peers:
        raw.sendall(struct.pack(">BBL", 0x04, 0, 4_000_000_000))  # a ~4 GB P-DATA-TF PDU ...
        total = 0
        try:
            for _ in range(50):  # ... of which we try to stream 50 MB
                raw.sendall(b"\0" * 1_000_000)
                total += 1_000_000
        except OSError:
            pass
        sent.append(total)
    for assoc, _ in peers:
        assert _await(lambda a=assoc: a.is_aborted), "no A-ABORT for the oversized PDU"  # type: ignore[attr-defined]
    assert min(sent) < 50_000_000, "the server kept reading an oversized PDU"
    assert _rss_kb(served.server.proc.pid) - rss_before < 100_000
    assert "P-DATA-TF PDU of 4000000000 bytes" in served.server.log()
    assert_serving(served)


@pytest.mark.parametrize("pdu", [
    pytest.param(struct.pack(">BBL", 0x04, 0, 200) + os.urandom(200), id="random body"),
    pytest.param(struct.pack(">BBL", 0x04, 0, 106) + struct.pack(">LBB", 102, 1, 3) + os.urandom(100),
                 id="garbage command"),
])
def test_garbage_p_data_gets_an_a_abort(served: Served, pdu: bytes) -> None:
    assoc, raw = _established(served.port)
    raw.sendall(pdu)
    assert _await(lambda: assoc.is_aborted)  # type: ignore[attr-defined]
    assert_serving(served)


def _associate_rq(called: str, calling: str, contexts: bytes = b"") -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) with the given presentation context items (none by default)."""
    app_context = b"1.2.840.10008.3.1.1.1"
    items = struct.pack(">BBH", 0x10, 0, len(app_context)) + app_context + contexts
    max_length = struct.pack(">BBHL", 0x51, 0, 4, 16382)
    items += struct.pack(">BBH", 0x50, 0, len(max_length)) + max_length
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32 + items
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def _reply(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    try:
        return sock.recv(64)
    except OSError:
        return b""


def test_an_association_request_without_presentation_contexts_is_rejected(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(_associate_rq(AE_TITLE, "RAWPEER"))
        reply = _reply(sock)
    assert reply[:1] == b"\x03", f"expected an A-ASSOCIATE-RJ, got {reply[:16]!r}"
    assert_serving(served)


# -- 5. idle connections ----------------------------------------------------------------------------------
def test_a_real_client_gets_in_while_24_idle_sockets_are_open(served: Served) -> None:
    idle = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(24)]
    try:
        time.sleep(0.5)  # all accepted, none has sent a byte
        started = time.monotonic()
        result = echo(served.port)
        assert result.returncode == 0, result.stdout + result.stderr
        assert time.monotonic() - started < 5
        assert store(served.port, _image(64, patient="IDLE")) == [0x0000]
    finally:
        for sock in idle:
            sock.close()
    assert_serving(served)


def test_an_idle_connection_is_closed_after_the_request_timeout(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.settimeout(15)
        started = time.monotonic()
        try:
            data = sock.recv(16)
        except ConnectionResetError:
            data = b""
        assert data in (b"",) or data[:1] == b"\x07"  # closed (or aborted), never left hanging
        assert time.monotonic() - started < 12  # server.association_request_timeout_s = 5 s by default


def test_a_c_get_with_the_storage_role_still_works(served: Served, tmp_path: Path) -> None:
    """The guards do not get in the way of an ordinary pynetdicom C-GET (sub-operations on one association)."""
    ds = _image(64, patient="GETOK")
    assert store(served.port, ds) == [0x0000]
    ae = AE(ae_title="GETTER")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(MRImageStorage)
    received: list[str] = []

    def on_store(event):  # type: ignore[no-untyped-def]
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    from pynetdicom import evt

    assoc = ae.associate("127.0.0.1", served.port, ae_title=AE_TITLE,
                         ext_neg=[build_role(MRImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.PatientID = "PATIENT", "GETOK"
    statuses = [int(status.Status) for status, _ in assoc.send_c_get(query, PatientRootQueryRetrieveInformationModelGet)
                if status]
    assoc.release()
    assert statuses[-1] == 0x0000 and received == [ds.SOPInstanceUID]


# -- 9. DCMTK getscu after a failed C-GET ---------------------------------------------------------------
@pytest.mark.parametrize("keys", [
    pytest.param({"QueryRetrieveLevel": "STUDY"}, id="no StudyInstanceUID"),
    pytest.param({"QueryRetrieveLevel": "FOO", "StudyInstanceUID": "1.2"}, id="bad level"),
])
def test_getscu_ends_cleanly_after_a_refused_c_get(served: Served, tmp_path: Path, keys: dict[str, str]) -> None:
    """The refusal reaches getscu and it releases normally (no "Association Release Failed")."""
    result = dcmtk.run("getscu", ["-v", "-aec", AE_TITLE, "-aet", "E2ESCU", "-S", "-od", str(tmp_path),
                                  *dcmtk.keys(keys), "127.0.0.1", str(served.port)], check=False)
    output = result.stdout + result.stderr
    assert "DataSetDoesNotMatchSOPClass" in output, output
    assert "Release Failed" not in output and "Aborting Association" not in output, output
    assert result.returncode == 0, output
