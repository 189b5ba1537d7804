"""The pieces of several serve processes on one port that need no running server (the e2e test runs them)."""

from __future__ import annotations

import select
import socket

import pytest

from pacs_cae.config import ServerSettings
from pacs_cae.net.limits import Limits
from pacs_cae.net.processes import Load, bind, resolve_processes


def test_each_process_gets_its_share_of_the_limits() -> None:
    limits = Limits.from_settings(ServerSettings(max_associations=16, max_associations_per_address=3,
                                                 max_pending_connections=1, max_pending_per_address=8))
    shared = limits.divided(4)
    assert (shared.max_associations, shared.max_associations_per_address, shared.max_pending_connections,
            shared.max_pending_per_address) == (4, 1, 1, 2)  # ceil, and never 0
    assert (shared.max_pdu_size, shared.max_dataset_bytes) == (limits.max_pdu_size, limits.max_dataset_bytes)
    assert limits.divided(1) == limits


def test_a_busier_process_defers_to_an_idle_sibling() -> None:
    load = Load(3)
    assert load.excess(0) == 0  # all idle: whoever wakes first accepts
    load.publish(0, 3)
    load.publish(1, 2)
    assert (load.excess(0), load.excess(1), load.excess(2)) == (3, 2, -2)
    load.publish(2, 3)
    assert (load.excess(0), load.excess(1)) == (1, -1)


def test_zero_processes_means_one_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert resolve_processes(0) == 6 and resolve_processes(2) == 2


def test_the_shared_socket_does_not_block_a_process_that_lost_the_accept_race() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        with pytest.raises(BlockingIOError):  # socketserver ignores it and goes back to waiting
            sock.accept()
        with socket.create_connection(sock.getsockname()[:2]):
            assert select.select([sock], [], [], 10)[0], "the connection never arrived"
            conn, _ = sock.accept()
            with conn:
                assert conn.gettimeout() is None  # the accepted socket blocks as pynetdicom expects
    finally:
        sock.close()
