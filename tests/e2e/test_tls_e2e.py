"""End to end over DICOM TLS: a real `pacs-cae serve` with mutual TLS, driven by DCMTK's +tls tools.

One server per module, SQLite only: what is tested is the transport (handshake, certificate checks, DIMSE over
TLS, the C-MOVE sub-association to a TLS destination), which does not depend on the database backend; the
codec sends nothing through the CAE (``modalities = ["CT"]``), so the stored MR slice comes back byte-exact.
Certificates: a throwaway CA, server, client and destination certificate made with `openssl`
(tests/net/tls_pki.py).
"""

from __future__ import annotations

import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import (
    AE_TITLE,
    ServerProcess,
    clean_environment,
    free_port,
    pacs_cae_command,
    write_config,
)
from tests.e2e.scenario import codec_under_test, write_datasets
from tests.net.tls_pki import Pair, Pki, make_ca, make_leaf, make_pki

pytestmark = pytest.mark.e2e

TLS_DEST = "TLSDEST"


@dataclass
class TlsRun:
    server: ServerProcess
    pki: Pki
    rogue: Pair  # a client certificate from another CA
    rogue_ca: Pair
    dest: Pair  # the C-MOVE destination's certificate (our CA)
    dest_port: int
    work: Path


def tls_args(client: Pair | None, ca: Path) -> list[str]:
    """DCMTK TLS options: with ``client`` (+tls key cert), else anonymous (+tla); trusting ``ca``."""
    auth = ["+tls", str(client.key), str(client.cert)] if client else ["+tla"]
    return [*auth, "+cf", str(ca)]


def echo_tls(port: int, client: Pair | None, ca: Path) -> subprocess.CompletedProcess[str]:
    return dcmtk.run("echoscu", [*tls_args(client, ca), "-aec", AE_TITLE, "-aet", "E2ESCU", "-to", "5",
                                 "127.0.0.1", str(port)], check=False, timeout=30)


def start_tls_server(work: Path, config: Path, port: int, pki: Pki, *, timeout: float = 180) -> ServerProcess:
    """Like server_process.start_server, but ready means a C-ECHO over mutual TLS is answered."""
    log_path = work / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*pacs_cae_command(), "serve", "--config", str(config)], cwd=work,
                                stdout=log, stderr=subprocess.STDOUT, env=clean_environment())
    server = ServerProcess(proc, port, config, log_path, work)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise AssertionError(f"pacs-cae serve exited {proc.returncode} before answering:\n{server.log()}")
        if echo_tls(port, pki.client, pki.ca.cert).returncode == 0:
            return server
        time.sleep(0.3)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"pacs-cae serve did not answer a TLS C-ECHO within {timeout:.0f} s:\n"
                         f"{server.log()}")


def move_over_tls(port: int, pki: Pki, study_uid: str) -> int:
    """A Study Root C-MOVE of ``study_uid`` to TLS_DEST, requested over mutual TLS; the final status."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    ae = AE(ae_title="E2ESCU")
    ae.add_requested_context(MOVE)
    ae.connection_timeout = ae.acse_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE, tls_args=(context, "127.0.0.1"))
    assert assoc.is_established, "C-MOVE SCU could not associate over TLS"
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study_uid
    responses = list(assoc.send_c_move(query, TLS_DEST, MOVE))
    assoc.release()
    return int(responses[-1][0].Status)


@pytest.fixture(scope="module")
def tls_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRun]:
    missing = dcmtk.missing_tools()
    if missing:  # a failure, not a skip: DCMTK interoperability is what these tests prove
        pytest.fail(f"DCMTK tools not found: {missing} (install the `dcmtk` package)", pytrace=False)
    work = tmp_path_factory.mktemp("tls-e2e")
    pki = make_pki(work / "pki")
    rogue_ca = make_ca(work / "rogue", "rogue-ca")
    rogue = make_leaf(work / "rogue", rogue_ca, "rogue-client")
    dest = make_leaf(work / "pki", pki.ca, "dest")
    port, dest_port = free_port(), free_port()
    model_id, _ = codec_under_test()
    config = write_config(
        work / "pacs-cae.toml", data_dir=work / "data", port=port,
        database_url=f"sqlite:///{(work / 'data' / 'archive.db').as_posix()}",
        codec={"model": model_id, "device": "cpu", "modalities": ["CT"]}, remotes={},
        server={"tls_certificate": str(pki.server.cert), "tls_private_key": str(pki.server.key),
                "tls_ca_certificates": str(pki.ca.cert)},
    )
    with config.open("a") as fh:  # [remotes] is the file's last table
        fh.write(f'{TLS_DEST} = {{ host = "127.0.0.1", port = {dest_port}, tls = true }}\n')
    server = start_tls_server(work, config, port, pki)
    try:
        yield TlsRun(server, pki, rogue, rogue_ca, dest, dest_port, work)
    finally:
        if server.alive():
            server.stop(signal.SIGTERM)


def test_echo_over_mutual_tls(tls_run: TlsRun) -> None:
    proc = echo_tls(tls_run.server.port, tls_run.pki.client, tls_run.pki.ca.cert)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plain_tcp_to_the_tls_port_fails(tls_run: TlsRun) -> None:
    proc = dcmtk.run("echoscu", ["-aec", AE_TITLE, "-aet", "E2ESCU", "-to", "5", "-ta", "5",
                                 "127.0.0.1", str(tls_run.server.port)], check=False, timeout=30)
    assert proc.returncode != 0


def test_client_without_certificate_is_refused(tls_run: TlsRun) -> None:
    proc = echo_tls(tls_run.server.port, None, tls_run.pki.ca.cert)
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_client_certificate_from_another_ca_is_refused(tls_run: TlsRun) -> None:
    proc = echo_tls(tls_run.server.port, tls_run.rogue, tls_run.pki.ca.cert)
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_dcmtk_rejects_the_server_when_it_trusts_another_ca(tls_run: TlsRun) -> None:
    """We present the configured certificate: a client trusting only another CA refuses the handshake."""
    proc = echo_tls(tls_run.server.port, tls_run.pki.client, tls_run.rogue_ca.cert)
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_store_find_and_move_over_tls(tls_run: TlsRun) -> None:
    """storescu and findscu over TLS; then C-MOVE to a DCMTK storescp that itself requires TLS client auth.

    DCMTK 3.6.7's movescu has no TLS options, so the C-MOVE request comes from a pynetdicom SCU; the
    sub-association under test (archive -> storescp, both ends verifying certificates) is DCMTK's.
    """
    s, port = tls_run, tls_run.server.port
    (ds,) = make_mr_series(1, 64, 64, 12, patient_id="PCAE-TLS", seed=7)
    files = write_datasets([ds], s.work / "in")
    scu = tls_args(s.pki.client, s.pki.ca.cert)
    dcmtk.run("storescu", [*scu, "-aec", AE_TITLE, "-aet", "E2ESCU", "127.0.0.1", str(port),
                           *map(str, files)], timeout=60)

    found_dir = s.work / "found"
    found_dir.mkdir()
    study = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": str(ds.StudyInstanceUID)}
    dcmtk.run("findscu", [*scu, "-aec", AE_TITLE, "-aet", "E2ESCU", "-S", "-X", "-od", str(found_dir),
                          *dcmtk.keys({**study, "NumberOfStudyRelatedInstances": ""}),
                          "127.0.0.1", str(port)], timeout=60)
    (answer,) = dcmtk.read_dir(found_dir)
    assert int(answer.NumberOfStudyRelatedInstances) == 1

    received = s.work / "moved"
    received.mkdir()
    storescp = dcmtk.tool("storescp")
    assert storescp is not None
    dest_log = (s.work / "storescp.log").open("w")
    dest = subprocess.Popen([storescp, *tls_args(s.dest, s.pki.ca.cert), "-aet", TLS_DEST,
                             "-od", str(received), str(s.dest_port)],
                            stdout=dest_log, stderr=subprocess.STDOUT, env=dcmtk.environment())
    try:
        time.sleep(0.5)  # storescp binds immediately; a refused sub-association would fail the move below
        status = move_over_tls(port, s.pki, str(ds.StudyInstanceUID))
    finally:
        dest.send_signal(signal.SIGTERM)
        dest.wait(10)
        dest_log.close()
    moved = [dcmread(p) for p in received.iterdir() if p.is_file()]
    assert status == 0x0000 and len(moved) == 1, (
        f"C-MOVE status 0x{status:04X}\n" + (s.work / "storescp.log").read_text() + s.server.log())
    assert moved[0].SOPInstanceUID == ds.SOPInstanceUID
    assert moved[0].PixelData == ds.PixelData


def test_sigterm_stops_the_tls_server_promptly(tls_run: TlsRun) -> None:
    """Last: refused clients leave no half-open association for shutdown to wait on, only a log line."""
    assert echo_tls(tls_run.server.port, None, tls_run.pki.ca.cert).returncode != 0  # one refusal at least
    started = time.monotonic()
    assert tls_run.server.stop(signal.SIGTERM) == 0, tls_run.server.log()
    assert time.monotonic() - started < 10, tls_run.server.log()
    assert "TLS handshake with 127.0.0.1" in tls_run.server.log()  # refusals are logged
