"""The waking DUL reactor (pacs_cae/net/reactor.py) under a real pynetdicom association to ArchiveServer."""

from __future__ import annotations

import gc
import os
import select
import threading
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pacs_cae.config import Settings
from pacs_cae.net.reactor import MAX_IDLE_WAIT_S, WakingDUL, _WakePipe
from pacs_cae.net.server import ArchiveServer
from tests.net.test_handlers import FakeArchive


@pytest.fixture
def server() -> Iterator[ArchiveServer]:
    settings = Settings()
    settings.server.host, settings.server.port = "127.0.0.1", 0
    archive_server = ArchiveServer(settings, FakeArchive())  # builds the AE: installs the reactor
    archive_server.start()
    yield archive_server
    archive_server.stop(grace_s=2)


def _associate(port: int):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="REACTOR")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE")
    assert assoc.is_established
    return assoc


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_both_ends_of_an_association_run_the_waking_reactor(server: ArchiveServer) -> None:
    assoc = _associate(server.address[1])
    try:
        assert isinstance(assoc.dul, WakingDUL)  # requested (as C-MOVE sub-associations are)
        accepted = list(server._server.active_associations)  # type: ignore[union-attr]
        assert accepted and all(isinstance(a.dul, WakingDUL) for a in accepted)
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_an_idle_association_waits_instead_of_polling(server: ArchiveServer) -> None:
    """pynetdicom's own loop runs ~1,000 times a second when idle; this one at most 1 / MAX_IDLE_WAIT_S."""
    assoc = _associate(server.address[1])
    loops = 0
    original = assoc.dul._process_recv_primitive

    def counting() -> bool:
        nonlocal loops
        loops += 1
        return original()

    try:
        assoc.dul._process_recv_primitive = counting  # called once per turn of the loop
        time.sleep(0.5)
        assoc.dul._process_recv_primitive = original
        assert loops <= 0.5 / MAX_IDLE_WAIT_S + 10
        assert assoc.send_c_echo().Status == 0x0000  # the waits did not stall the association
    finally:
        assoc.release()


def test_the_wake_pipes_are_closed_when_associations_end(server: ArchiveServer) -> None:
    _associate(server.address[1]).release()  # warm up: whatever the first association opens for good
    time.sleep(0.2)
    gc.collect()
    before = _open_fds()
    for _ in range(10):
        assoc = _associate(server.address[1])
        assoc.send_c_echo()
        assoc.release()
        assoc.dul.join(5)
    deadline = time.monotonic() + 5
    while server._server.active_associations and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.05)
    gc.collect()
    assert _open_fds() <= before + 2  # 10 associations x 2 ends x 2 pipe ends would be +40


def test_a_wake_cuts_an_armed_wait_short_and_a_closed_pipe_ignores_it() -> None:
    pipe = _WakePipe()
    assert pipe.read_fd is not None
    pipe.wake()  # nobody waits: nothing written
    assert select.select([pipe.read_fd], [], [], 0)[0] == []
    pipe.arm()
    threading.Timer(0.05, pipe.wake).start()
    assert select.select([pipe.read_fd], [], [], 10)[0] == [pipe.read_fd]
    pipe.drain()
    assert select.select([pipe.read_fd], [], [], 0)[0] == []
    for _ in range(100_000):  # more wake-ups than the pipe holds: never blocks
        pipe.arm()
        pipe.wake()
    pipe.close()
    pipe.close()
    pipe.wake()
    pipe.drain()
    assert pipe.read_fd is None
