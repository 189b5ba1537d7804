"""The e2e helpers' ports: a server a test starts later must still find its port free."""

from __future__ import annotations

import socket

from pacs_cae.testing import server_process
from pacs_cae.testing.server_process import free_port


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    # ports the OS gives outgoing connections (DCMTK clients, C-MOVE sub-associations) come from that range,
    # so one of them could take a port chosen there before its server binds it
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(server_process._LOWEST_PORT <= p < server_process._ephemeral_low() for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # and it is free


def test_a_port_someone_listens_on_is_not_handed_out(monkeypatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks = iter([taken, taken, *range(20000, 20200)])  # the busy one twice, then others

        class Picker:
            def randrange(self, low: int, high: int) -> int:
                return next(picks)

        monkeypatch.setattr(server_process.random, "SystemRandom", Picker)
        monkeypatch.setattr(server_process, "_ephemeral_low", lambda: 65536)
        assert free_port() != taken
