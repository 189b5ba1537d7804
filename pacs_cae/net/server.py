"""Run the archive's AE until SIGINT/SIGTERM, then stop accepting and let open associations finish.

The accept loop runs in pynetdicom's server thread; the main thread only waits on an Event that the signal
handlers set, so a signal never interrupts a half-written transaction.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom.utils import make_target

from pacs_cae.config import Settings
from pacs_cae.net.ae import build_ae
from pacs_cae.net.handlers import ArchiveHandlers, ArchiveLike
from pacs_cae.net.limits import (
    LIMIT_HANDLERS,
    GuardedAssociationServer,
    GuardedRequestHandler,
    Limits,
    close_connection,
)
from pacs_cae.net.processes import Listener, SharedSocketServer
from pacs_cae.net.tls import TlsRequestHandler, server_context

LOG = logging.getLogger(__name__)

#: How long a shutdown waits for open associations before aborting them.
DEFAULT_GRACE_S = 30.0


class ArchiveServer:
    """The AE bound to an archive; :meth:`start` listens without blocking, :meth:`stop` drains."""

    def __init__(self, settings: Settings, archive: ArchiveLike, listener: Listener | None = None) -> None:
        self.settings = settings
        self.archive = archive
        self.listener = listener  # one of several serve processes: accept on the supervisor's socket
        self.ae = build_ae(settings.server)
        self.handlers = ArchiveHandlers(archive, settings)
        # DICOM TLS when server.tls_certificate is set (None = plain TCP); built here so a bad certificate
        # fails before we listen.
        self.ssl_context = server_context(settings.server)
        self._server: GuardedAssociationServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when configured as 0."""
        if self._server is None:
            raise RuntimeError("server not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        """Listen on the configured address in a background thread; returns the bound address."""
        address = (self.settings.server.host, self.settings.server.port)
        # TLS: the handshake runs per connection, in its own thread (see pacs_cae/net/tls.py)
        handler = TlsRequestHandler if self.ssl_context is not None else GuardedRequestHandler
        shared = self.listener
        server = self.ae.make_server(address, ssl_context=self.ssl_context,
                                     evt_handlers=[*LIMIT_HANDLERS, *self.handlers.bindings()],
                                     server_class=(GuardedAssociationServer if shared is None
                                                   else SharedSocketServer.for_listener(shared)),
                                     request_handler=handler)
        assert isinstance(server, GuardedAssociationServer)
        limits = Limits.from_settings(self.settings.server)
        server.limits = limits if shared is None else limits.divided(shared.processes)
        # What AE.start_server(block=False) does, which cannot take our classes: register, serve in a thread.
        self.ae._servers.append(server)
        threading.Thread(target=make_target(server.serve_forever), name="AcceptorServer", daemon=True).start()
        if self.ssl_context is not None:
            LOG.info("DICOM TLS on; client certificates %s",
                     "required" if self.settings.server.tls_ca_certificates else "not required")
        self._server = server
        return self.address

    def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Stop accepting, wait up to ``grace_s`` for open associations to end, then abort the rest."""
        if self._server is None:
            return
        open_assocs = list(self._server.active_associations)
        for assoc in open_assocs:  # connections that never asked for an association have nothing to finish
            if not assoc.is_established:
                close_connection(assoc)
        self._server.shutdown()  # closes the listening socket; accepted associations keep running
        self._server = None
        if open_assocs:
            LOG.info("waiting for %d open association(s) to finish", len(open_assocs))
        deadline = time.monotonic() + grace_s
        for assoc in open_assocs:
            assoc.join(max(0.0, deadline - time.monotonic()))
        for assoc in open_assocs:
            if assoc.is_alive():
                if assoc.is_established:
                    LOG.warning("aborting association with %s after %.0f s grace", assoc.requestor.ae_title,
                                grace_s)
                close_connection(assoc)
        self.ae.shutdown()


def install_stop_signals(stop: threading.Event) -> Callable[[], None]:
    """Make SIGINT and SIGTERM set ``stop``; returns a function restoring the previous handlers."""
    previous: dict[int, Any] = {}

    def _handler(signum: int, _frame: Any) -> None:
        LOG.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, _handler)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def serve_until_signalled(
    settings: Settings,
    archive: ArchiveLike,
    *,
    stop: threading.Event | None = None,
    on_ready: Callable[[tuple[str, int]], None] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    listener: Listener | None = None,
) -> None:
    """Serve until ``stop`` is set (by SIGINT/SIGTERM when called from the main thread).

    The archive stays open to the caller, which closes it after this returns (all associations ended).
    """
    stop = stop or threading.Event()
    restore = (install_stop_signals(stop) if threading.current_thread() is threading.main_thread()
               else (lambda: None))
    server = ArchiveServer(settings, archive, listener)
    try:
        address = server.start()
        if on_ready is not None:
            on_ready(address)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(grace_s)
        restore()
