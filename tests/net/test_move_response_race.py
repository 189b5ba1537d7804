"""The C-MOVE sub-association keeps a C-STORE response its reactor took while the sender had paused it."""

from __future__ import annotations

import queue
import threading
from typing import Any

from pacs_cae.net.handlers import keep_responses_for_the_sender


class _Msg:
    def __init__(self, request: bool) -> None:
        self.is_valid_request = request


class _Dimse:
    def __init__(self) -> None:
        self.msg_queue: queue.Queue[tuple[int, Any]] = queue.Queue()


class _Assoc:
    def __init__(self) -> None:
        self._reactor_checkpoint = threading.Event()
        self._reactor_checkpoint.set()
        self.dimse = _Dimse()
        self.served: list[Any] = []

    def _serve_request(self, msg: Any, context_id: int) -> None:
        self.served.append(msg)


def test_a_response_taken_while_paused_goes_back_to_the_sender() -> None:
    assoc = _Assoc()
    keep_responses_for_the_sender(assoc)
    response = _Msg(request=False)
    assoc._reactor_checkpoint.clear()  # send_c_store paused the reactor and waits in get_msg(block=True)
    assoc._serve_request(response, 3)
    assert assoc.served == [] and assoc.dimse.msg_queue.get_nowait() == (3, response)


def test_requests_and_unpaused_messages_are_served_as_before() -> None:
    assoc = _Assoc()
    keep_responses_for_the_sender(assoc)
    request, stray = _Msg(request=True), _Msg(request=False)
    assoc._reactor_checkpoint.clear()
    assoc._serve_request(request, 1)  # a request is the reactor's to serve, paused or not
    assoc._reactor_checkpoint.set()
    assoc._serve_request(stray, 1)  # nobody waits for it: pynetdicom's own handling (a warning)
    assert assoc.served == [request, stray] and assoc.dimse.msg_queue.empty()
