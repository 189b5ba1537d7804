"""PduLimitedSocket reads a PDU into one buffer however the kernel splits it, and stops at a closed peer."""

from __future__ import annotations

import socket
import threading
import time

from pacs_cae.net.limits import PduLimitedSocket


def _reader(sock: socket.socket) -> PduLimitedSocket:
    reader = PduLimitedSocket.__new__(PduLimitedSocket)  # the DUL's wrapper without an association
    reader.socket = sock
    return reader


def _send_in_pieces(sock: socket.socket, data: bytes, piece: int, close: bool) -> threading.Thread:
    def send() -> None:
        for start in range(0, len(data), piece):
            sock.sendall(data[start:start + piece])
            time.sleep(0.002)
        if close:
            sock.close()

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_a_body_sent_in_pieces_is_read_whole() -> None:
    ours, peer = socket.socketpair()
    data = bytes(range(256)) * 1024  # 256 KiB
    sender = _send_in_pieces(peer, data, 10_000, close=False)
    try:
        assert bytes(_reader(ours)._read(len(data))) == data
    finally:
        sender.join(30)
        ours.close()
        peer.close()


def test_a_peer_that_closes_early_gives_what_arrived() -> None:
    ours, peer = socket.socketpair()
    sender = _send_in_pieces(peer, b"x" * 5000, 1000, close=True)
    try:
        assert bytes(_reader(ours)._read(8000)) == b"x" * 5000
    finally:
        sender.join(30)
        ours.close()
