"""An association is idle when neither side is doing anything; time spent serving the peer is not idle.

pynetdicom aborts an association whose network timeout (``server.idle_timeout_s``) expired, and restarts that
timer only when a PDU *arrives*. Its reactor checks the timer right after serving a request, and a C-MOVE
requestor sends nothing while the sub-operations run (they go to the destination, on another association).
So a C-MOVE that took longer than the idle timeout was aborted just after its final response, before the
peer's A-RELEASE-RQ could arrive: DCMTK ``movescu`` exits 67 with "Association Release Failed: Peer aborted
Association", although every instance was delivered. That was the intermittent failure of four parallel
C-MOVEs in the throughput benchmark on a slow machine (the README's "Parallel C-MOVE, not understood"). A long
C-FIND or C-GET whose peer stays quiet would end the same way.

:func:`serving_is_not_idle` restarts the timer once a request has been served, so the peer gets the whole
idle timeout to send its next request or release.
"""

from __future__ import annotations

from typing import Any

from pynetdicom.events import Event


def serving_is_not_idle(event: Event) -> None:
    """EVT_CONN_OPEN handler (accepted associations): the idle timer restarts when a request was served."""
    assoc = event.assoc
    serve = assoc._serve_request

    def serve_request(msg: Any, context_id: int) -> None:
        try:
            serve(msg, context_id)
        finally:
            assoc.dul._idle_timer.restart()

    assoc._serve_request = serve_request  # type: ignore[method-assign]


__all__ = ["serving_is_not_idle"]
