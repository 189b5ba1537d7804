"""`pacs-cae serve --processes 2`: two serve processes on one port, through DCMTK, on SQLite and PostgreSQL.

Associations held open at the same time (pynetdicom peers storing over them) spread over both processes;
every acknowledged instance is retrievable (DCMTK getscu) and byte-exact; a child that is killed is
restarted while the other keeps serving; SIGTERM stops them all; a supervisor killed outright leaves no
process serving the port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage

from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import (
    ServerProcess,
    clean_environment,
    echo,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)
from tests.e2e.compare import check_lossless

pytestmark = pytest.mark.e2e

ASSOCIATIONS = 4


def _child_pids(supervisor: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(supervisor)], check=False, capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def _wait_until_both_listen(server: ServerProcess) -> None:
    """serve[0] answered the readiness echo; serve[1] may still be starting."""
    deadline = time.monotonic() + 120
    while "2 serve processes listening" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its (dead) parent's reaper."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _accepted_by(log: str) -> dict[str, int]:
    """How many storescu associations each serve process accepted, from its tagged log lines."""
    found: dict[str, int] = {}
    for index in re.findall(r"net\.handlers\[(\d+)\]: association accepted from E2ESCU", log):
        found[index] = found.get(index, 0) + 1
    return found


def test_two_serve_processes_share_the_port(module_database_url: str, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "procs.toml", data_dir=tmp_path / "data", port=port,
                          database_url=module_database_url, codec={"model": "none"}, remotes={},
                          compression={"delay_s": 0, "poll_s": 0.2})
    if not module_database_url.startswith("sqlite"):
        subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], check=True,
                       capture_output=True, env=clean_environment())
    series = make_mr_series(12, 128, 128)
    server = start_server(tmp_path, config, port, args=["--processes", "2"])
    try:
        assert len(_child_pids(server.proc.pid)) == 2, server.log()
        _wait_until_both_listen(server)
        before = len(server.log())  # the readiness C-ECHOs came from E2ESCU too
        # all open at once, so the busier process leaves the next connection to its sibling (net/processes.py);
        # one after another they may all land on one process, each done before the next arrives
        ae = AE(ae_title="E2ESCU")
        ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        held = [ae.associate("127.0.0.1", port, ae_title="PACSCAE") for _ in range(ASSOCIATIONS)]
        try:
            assert all(assoc.is_established for assoc in held)
            for i, assoc in enumerate(held):
                assert all(assoc.send_c_store(ds).Status == 0x0000 for ds in series[i::ASSOCIATIONS])
        finally:
            for assoc in held:
                assoc.release()
        accepted = _accepted_by(server.log()[before:])
        assert sum(accepted.values()) == ASSOCIATIONS and set(accepted) == {"0", "1"}, accepted

        victim = _child_pids(server.proc.pid)[-1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while "restarting it" not in server.log() or len(_child_pids(server.proc.pid)) < 2:
            assert time.monotonic() < deadline, server.log()
            assert echo(port).returncode == 0  # the other process answers meanwhile
            time.sleep(0.2)
        assert victim not in _child_pids(server.proc.pid)

        out = tmp_path / "get"
        out.mkdir()
        dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-S", "-od", str(out), *dcmtk.keys(
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": str(series[0].StudyInstanceUID)}),
            "127.0.0.1", str(port)])
        retrieved = {str(ds.SOPInstanceUID): ds for ds in dcmtk.read_dir(out)}
        assert set(retrieved) == {str(ds.SOPInstanceUID) for ds in series}
        for original in series:
            check_lossless(original, retrieved[str(original.SOPInstanceUID)])
        children = _child_pids(server.proc.pid)
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.log()
    assert all(not Path(f"/proc/{pid}").exists() for pid in children), "a serve process outlived SIGTERM"
    assert server.log().count("serve[0]: stopped") >= 1 and "serve[1]: stopped" in server.log()


def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "procs.toml", data_dir=tmp_path / "data", port=port,
                          database_url=f"sqlite:///{tmp_path / 'archive.db'}", codec={"model": "none"}, remotes={})
    server = start_server(tmp_path, config, port, args=["--processes", "2"])
    _wait_until_both_listen(server)
    children = _child_pids(server.proc.pid)
    assert len(children) == 2
    server.stop(signal.SIGKILL)  # nobody left to forward a SIGTERM
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in children):
        assert time.monotonic() < deadline, f"serve processes outlived their supervisor:\n{server.log()}"
        time.sleep(0.2)
    assert "the supervisor" in server.log() and "is gone" in server.log()
    assert echo(port).returncode != 0  # nothing answers on the port any more
    (tmp_path / "again").mkdir()
    again = start_server(tmp_path / "again", config, port)
    assert again.stop(signal.SIGTERM) == 0, again.log()
