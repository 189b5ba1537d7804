"""A C-MOVE that takes longer than ``server.idle_timeout_s`` ends cleanly (real `pacs-cae serve`, DCMTK movescu).

The requestor of a C-MOVE sends nothing while the sub-operations run; pynetdicom counted that as idle and
aborted the association right after the final response ("Association Release Failed: Peer aborted
Association"), the intermittent failure of parallel C-MOVEs on a slow machine (pacs_cae/net/idle.py). Here a
destination that takes 0.8 s per C-STORE makes a 6-instance C-MOVE last about 5 s against a 2 s idle timeout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import free_port, start_server, write_config

IDLE_TIMEOUT_S = 2.0
STORE_DELAY_S = 0.8


@pytest.fixture
def slow_destination() -> Iterator[tuple[int, list[str]]]:
    """A storage SCP (pynetdicom) that answers each C-STORE after STORE_DELAY_S; (port, received UIDs)."""
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        time.sleep(STORE_DELAY_S)
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="SLOWDEST")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield port, received
    finally:
        server.shutdown()


def test_a_move_longer_than_the_idle_timeout_is_released_not_aborted(
        tmp_path: Path, slow_destination: tuple[int, list[str]]) -> None:
    missing = dcmtk.missing_tools()
    if missing:
        pytest.fail(f"DCMTK tools not found: {missing}", pytrace=False)
    dest_port, received = slow_destination
    port = free_port()
    config = write_config(tmp_path / "pacs-cae.toml", data_dir=tmp_path / "data", port=port,
                          database_url=f"sqlite:///{tmp_path / 'archive.sqlite'}", codec={"model": "none"},
                          remotes={"SLOWDEST": dest_port}, server={"idle_timeout_s": IDLE_TIMEOUT_S})
    series = make_mr_series(6, 64, 64)
    files = []
    for i, ds in enumerate(series):
        files.append(tmp_path / f"s{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    server = start_server(tmp_path, config, port)
    try:
        dcmtk.run("storescu", ["-aec", "PACSCAE", "127.0.0.1", str(port), *map(str, files)])
        started = time.monotonic()
        proc = dcmtk.run("movescu", ["-v", "-aec", "PACSCAE", "-aem", "SLOWDEST", "-S",
                                     *dcmtk.keys({"QueryRetrieveLevel": "STUDY",
                                                  "StudyInstanceUID": series[0].StudyInstanceUID}),
                                     "127.0.0.1", str(port)], check=False, timeout=120)
        took = time.monotonic() - started
        assert took > 2 * IDLE_TIMEOUT_S, f"the C-MOVE took {took:.1f} s: too short to test the idle timeout"
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "Peer aborted" not in output, output
        assert sorted(received) == sorted(str(ds.SOPInstanceUID) for ds in series)
        assert server.alive()
    finally:
        server.stop()
