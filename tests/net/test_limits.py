"""Connection and association limits (pacs_cae/net/limits.py) with a real pynetdicom peer and raw sockets.

The fake archive keeps these fast; tests/e2e/test_hostile_peers_e2e.py repeats the attacks on `pacs-cae serve`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pacs_cae.config import Settings
from pacs_cae.net.server import ArchiveServer
from tests.net.test_handlers import FakeArchive


@pytest.fixture
def make_server() -> Iterator:  # type: ignore[type-arg]
    started: list[ArchiveServer] = []

    def _make(**server: object) -> int:
        settings = Settings()
        settings.server.host, settings.server.port = "0.0.0.0", 0
        for key, value in server.items():
            setattr(settings.server, key, value)
        archive_server = ArchiveServer(settings, FakeArchive())
        started.append(archive_server)
        return archive_server.start()[1]

    yield _make
    for archive_server in started:
        archive_server.stop(grace_s=2)


def _associate(port: int, source: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="LIMITS")
    ae.add_requested_context(Verification)
    ae.acse_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="PACSCAE", bind_address=(source, 0))


def _idle(port: int, n: int, source: str = "127.0.0.1") -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        socks.append(sock)
    return socks


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_only_established_associations_count_against_the_limit(make_server) -> None:  # type: ignore[no-untyped-def]
    port = make_server(max_associations=2, max_pending_connections=64, max_pending_per_address=64)
    idle = _idle(port, 10)
    try:
        first, second = _associate(port), _associate(port)
        assert first.is_established and second.is_established
        third = _associate(port)
        assert third.is_rejected  # rejected-transient, local-limit-exceeded
        assert third.acceptor.primitive.result == 0x02 and third.acceptor.primitive.diagnostic == 0x02
        first.release()
        time.sleep(0.3)
        fourth = _associate(port)
        assert fourth.is_established
        fourth.release()
        second.release()
    finally:
        for sock in idle:
            sock.close()


def test_the_per_address_limit_leaves_other_addresses_in(make_server) -> None:  # type: ignore[no-untyped-def]
    port = make_server(max_associations_per_address=1)
    mine = _associate(port, "127.0.0.1")
    try:
        assert mine.is_established
        assert _associate(port, "127.0.0.1").is_rejected
        other = _associate(port, "127.0.0.2")
        assert other.is_established
        other.release()
    finally:
        mine.release()


def test_the_oldest_idle_connection_of_an_address_is_closed_first(make_server) -> None:  # type: ignore[no-untyped-def]
    port = make_server(max_pending_per_address=2, association_request_timeout_s=30)
    other = _idle(port, 1, "127.0.0.4")
    idle = _idle(port, 3, "127.0.0.3")
    try:
        assert _closed_by_server(idle[0], 5)  # pushed out by the third from the same address
        assert not _closed_by_server(idle[2], 0.5)
        assert not _closed_by_server(other[0], 0.2)  # another address keeps its connection
        assoc = _associate(port, "127.0.0.3")  # a real client from that address still gets in
        assert assoc.is_established
        assoc.release()
    finally:
        for sock in [*idle, *other]:
            sock.close()


def test_a_silent_association_loses_its_slot_after_the_idle_timeout(make_server) -> None:  # type: ignore[no-untyped-def]
    # 3 s: the second request must be answered while the first still holds the slot (1 s was too short on a
    # loaded CI machine, where the first was already aborted when the second arrived)
    port = make_server(max_associations=1, idle_timeout_s=3.0)
    silent = _associate(port)
    assert silent.is_established
    assert _associate(port).is_rejected
    deadline = time.monotonic() + 20
    while silent.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert silent.is_aborted  # the server aborted it
    time.sleep(0.3)
    again = _associate(port)
    assert again.is_established
    again.release()


def test_a_data_set_larger_than_max_dataset_bytes_is_aborted(make_server) -> None:  # type: ignore[no-untyped-def]
    from pynetdicom.sop_class import MRImageStorage

    from pacs_cae.testing.factories import make_mr_series

    port = make_server(max_dataset_bytes=64 * 1024)
    ae = AE(ae_title="LIMITS")
    ae.add_requested_context(MRImageStorage)
    small = make_mr_series(1, 64, 64, 12)[0]  # 8 KiB of pixels
    large = make_mr_series(1, 256, 256, 12)[0]  # 128 KiB
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE")
    assert assoc.is_established
    assert assoc.send_c_store(small).Status == 0x0000
    status = assoc.send_c_store(large)
    assert "Status" not in status  # no response: the server aborted the association
    deadline = time.monotonic() + 10
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    again = ae.associate("127.0.0.1", port, ae_title="PACSCAE")  # and keeps serving
    assert again.is_established
    again.release()
