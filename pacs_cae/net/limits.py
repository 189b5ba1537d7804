"""What one peer may cost the server: connections, associations, PDU length and buffered bytes.

pynetdicom counts every accepted TCP connection as an association from the moment it is accepted, so
sockets that never send a byte fill ``maximum_associations`` and lock real clients out. Here:

* connections that have not sent their A-ASSOCIATE-RQ yet are *pending*; they must do so within
  ``association_request_timeout_s``, and beyond ``max_pending_connections`` (``max_pending_per_address``
  for one IP address) the oldest pending one is closed, so idle sockets can only push out each other;
* only associations admitted at A-ASSOCIATE-RQ time count against ``max_associations`` and
  ``max_associations_per_address`` (more: A-ASSOCIATE-RJ, rejected-transient, local-limit-exceeded); a
  request without any presentation context is rejected (permanent);
* :class:`PduLimitedSocket` reads each PDU header before its body: a P-DATA-TF PDU longer than the Maximum
  Length we announced (``max_pdu_size``), another PDU longer than :data:`MAX_CONTROL_PDU`, or a DIMSE message
  growing past ``max_dataset_bytes`` gets an A-ABORT before its bytes are buffered.

Hooks used: pynetdicom's server and request handler are subclassed (``make_server`` accepts both); the
association's socket is built inside ``RequestHandler._create_association`` with no factory argument, so its
class is switched to :class:`PduLimitedSocket` right after (same object, same state, one overridden method).
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from pacs_cae.config import ServerSettings
from pacs_cae.net.contexts import cheaply_copied
from pacs_cae.net.interop import PeerFriendlyDimse

LOG = logging.getLogger(__name__)

#: Longest A-ASSOCIATE/A-RELEASE/A-ABORT PDU accepted (128 presentation contexts with many syntaxes fit).
MAX_CONTROL_PDU = 1024 * 1024
#: Most bytes of DIMSE command set one association may buffer (commands are a few hundred bytes).
MAX_COMMAND_BYTES = 1024 * 1024
_P_DATA_TF = 0x04
_HEADER = struct.Struct(">BBL")
_PDV_HEADER = struct.Struct(">LBB")
#: A-ABORT source 2 (service provider), reason 6 (invalid PDU parameter value), PS3.8 9.3.8.
_ABORT_INVALID_PARAMETER = bytes([0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02, 0x06])
#: A-ASSOCIATE-RJ (result, source, reason): PS3.8 Table 9-21.
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # rejected-transient, presentation related, local-limit-exceeded
REJECT_NO_REASON = (0x01, 0x01, 0x01)  # rejected-permanent, service user, no-reason-given


@dataclass(frozen=True)
class Limits:
    """The per-peer bounds from ``[server]`` (see docs/configuration.md "Connection limits")."""

    max_associations: int
    max_associations_per_address: int
    max_pending_connections: int
    max_pending_per_address: int
    max_pdu_size: int
    max_dataset_bytes: int
    idle_timeout_s: float

    @classmethod
    def from_settings(cls, s: ServerSettings) -> Limits:
        return cls(s.max_associations, s.max_associations_per_address, s.max_pending_connections,
                   s.max_pending_per_address, s.max_pdu_size, s.max_dataset_bytes, s.idle_timeout_s)

    def divided(self, processes: int) -> Limits:
        """One of ``processes`` serve processes' share: ``ceil(limit / processes)`` of each count, so the
        totals stay within the configured ones, rounded up to a multiple of ``processes``
        (:mod:`pacs_cae.net.processes`). Per-PDU and per-association bounds are unchanged."""
        def share(limit: int) -> int:
            return max(1, math.ceil(limit / processes))

        return replace(self, max_associations=share(self.max_associations),
                       max_associations_per_address=share(self.max_associations_per_address),
                       max_pending_connections=share(self.max_pending_connections),
                       max_pending_per_address=share(self.max_pending_per_address))


class PduTooLong(Exception):
    """The peer broke a PDU or buffering bound, or sent a malformed P-DATA-TF PDU; the association is aborted."""


class PduLimitedSocket(AssociationSocket):
    """An :class:`AssociationSocket` that checks each PDU header before the DUL reads the body.

    pynetdicom's DUL reads a PDU as ``recv(6)`` (type, reserved, length) and then ``recv(length)``; the
    calls alternate, so the header is seen before a single body byte is buffered.
    """

    limits: Limits
    _body: tuple[int, int] | None
    _dataset_bytes: int
    _command_bytes: int

    def start_limits(self, limits: Limits) -> None:
        self.limits, self._body, self._dataset_bytes, self._command_bytes = limits, None, 0, 0

    def recv(self, nr_bytes: int) -> bytearray:
        body = self._body
        if body is None and nr_bytes == _HEADER.size:
            data = self._read(nr_bytes)
            if len(data) == _HEADER.size:
                pdu_type, _, length = _HEADER.unpack(data)
                try:
                    self._check_header(pdu_type, length)
                except PduTooLong as exc:
                    return self._abort(str(exc))
                self._body = (pdu_type, length)
            return data
        self._body = None
        data = self._read(nr_bytes)
        if body is not None and body[0] == _P_DATA_TF and len(data) == nr_bytes:
            try:
                self._count_pdvs(data)
            except PduTooLong as exc:
                return self._abort(str(exc))
        return data

    def _read(self, nr_bytes: int) -> bytearray:
        """``nr_bytes`` (fewer only when the peer closed), read into one buffer as the kernel delivers them.

        pynetdicom's own ``recv`` reads 4 KiB at a time: 128 calls per 512 KiB slice, each giving up and
        re-taking the GIL, which with several associations queues every call behind the other threads. The
        buffer is allocated before the bytes arrive, so ``nr_bytes`` must be bounded: every body length here
        passed :meth:`_check_header` first (``max_pdu_size`` for P-DATA, ``MAX_CONTROL_PDU`` otherwise).
        """
        sock = self.socket
        if sock is None:
            return bytearray()
        buffer = bytearray(nr_bytes)
        with memoryview(buffer) as view:
            got = 0
            while got < nr_bytes:
                n = sock.recv_into(view[got:], nr_bytes - got)
                if not n:
                    break
                got += n
        if got < nr_bytes:
            del buffer[got:]
        return buffer

    def _check_header(self, pdu_type: int, length: int) -> None:
        if pdu_type == _P_DATA_TF and length > self.limits.max_pdu_size:
            raise PduTooLong(f"P-DATA-TF PDU of {length} bytes, the negotiated maximum is "
                             f"{self.limits.max_pdu_size}")
        if pdu_type != _P_DATA_TF and length > MAX_CONTROL_PDU:
            raise PduTooLong(f"PDU type 0x{pdu_type:02X} of {length} bytes (at most {MAX_CONTROL_PDU})")

    def _count_pdvs(self, body: bytearray) -> None:
        """Add each presentation data value to the message being assembled; reset on its last fragment.

        A body that is not a whole sequence of PDV items is garbage: it is refused here, before pynetdicom
        would try to decode it.
        """
        offset = 0
        while offset < len(body):
            if offset + _PDV_HEADER.size > len(body):
                raise PduTooLong(f"malformed P-DATA-TF PDU: {len(body) - offset} stray bytes after the last PDV")
            item_length, _context, control = _PDV_HEADER.unpack_from(body, offset)
            if item_length < 2 or offset + 4 + item_length > len(body):
                raise PduTooLong(f"malformed P-DATA-TF PDU: a PDV item of {item_length} bytes in "
                                 f"{len(body) - offset - 4} remaining")
            size = item_length - 2
            if control & 0x01:  # command fragment
                self._command_bytes += size
                if self._command_bytes > MAX_COMMAND_BYTES:
                    raise PduTooLong(f"a DIMSE command set of more than {MAX_COMMAND_BYTES} bytes")
                if control & 0x02:
                    self._command_bytes = 0
            else:
                self._dataset_bytes += size
                if self._dataset_bytes > self.limits.max_dataset_bytes:
                    raise PduTooLong(f"a DIMSE data set of more than {self.limits.max_dataset_bytes} bytes "
                                     "(server.max_dataset_bytes)")
                if control & 0x02:
                    self._dataset_bytes = 0
            offset += 4 + item_length

    def _abort(self, reason: str) -> bytearray:
        """Send an A-ABORT, close, and hand the DUL a short read (it then ends the association)."""
        peer = self._peer()
        LOG.warning("A-ABORT to %s: %s", peer, reason)
        raw = self.socket
        if raw is not None:
            try:
                raw.sendall(_ABORT_INVALID_PARAMETER)
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._body = None
        return bytearray()

    def _peer(self) -> str:
        try:
            host, port = self.socket.getpeername()[:2] if self.socket is not None else ("?", 0)
        except OSError:
            return "a closed connection"
        return f"{host}:{port}"


@dataclass
class _Pending:
    sock: socket.socket
    address: str
    since: float = field(default_factory=time.monotonic)

    @property
    def closed(self) -> bool:
        return self.sock.fileno() == -1


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the pending-connection and admission bookkeeping above."""

    limits: Limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contexts = cheaply_copied(self.contexts)  # copied once per association (net/contexts.py)
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []  # in accept order, oldest first
        self._admitted: dict[int, str] = {}  # id(assoc) -> peer address
        self.daemon_threads = True  # a connection still in its handshake must not hold up shutdown()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the accepted connection (in accept order) before its thread starts; close the oldest beyond
        the pending limits."""
        evict: list[_Pending] = []
        address = str(client_address[0])
        with self._lock:
            self._pending = [p for p in self._pending if not p.closed]
            self._pending.append(_Pending(request, address))
            same = [p for p in self._pending if p.address == address]
            evict += same[:max(0, len(same) - self.limits.max_pending_per_address)]
            rest = [p for p in self._pending if p not in evict]
            evict += rest[:max(0, len(rest) - self.limits.max_pending_connections)]
            self._pending = [p for p in self._pending if p not in evict]
        for pending in evict:
            LOG.warning("closing idle connection from %s (no association request after %.1f s; "
                        "pending-connection limit)", pending.address, time.monotonic() - pending.since)
            _shutdown(pending.sock)
        super().process_request(request, client_address)

    def admit(self, assoc: Association) -> tuple[int, int, int] | None:
        """At A-ASSOCIATE-RQ: None to go on negotiating, else the (result, source, reason) to reject with."""
        address = str(assoc.requestor.address)
        raw = getattr(assoc.dul.socket, "socket", None)
        with self._lock:
            self._pending = [p for p in self._pending if p.sock is not raw and not p.closed]
            live = {id(a) for a in self.active_associations}
            self._admitted = {k: v for k, v in self._admitted.items() if k in live}
            if len(self._admitted) >= self.limits.max_associations:
                return REJECT_LOCAL_LIMIT
            if sum(1 for a in self._admitted.values() if a == address) >= self.limits.max_associations_per_address:
                return REJECT_LOCAL_LIMIT
            self._admitted[id(assoc)] = address
        return None

    def release(self, assoc: Association) -> None:
        """The connection closed: its slot is free again."""
        with self._lock:
            self._admitted.pop(id(assoc), None)

    @property
    def admitted(self) -> int:
        """Associations holding a slot now."""
        with self._lock:
            return len(self._admitted)

    @property
    def connections(self) -> int:
        """Connections this server holds now: still negotiating, or admitted."""
        with self._lock:
            return sum(1 for p in self._pending if not p.closed) + len(self._admitted)


def _shutdown(sock: socket.socket | None) -> None:
    """Shut a connection down; its DUL sees the close, its thread ends at the request timeout at the latest."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's connection handler: PDU-limited socket, read timeout, peer-friendly DIMSE responses."""

    server: GuardedAssociationServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        sock = assoc.dul.socket
        assert sock is not None
        sock.__class__ = PduLimitedSocket  # see the module docstring: no factory hook for the socket
        limited: PduLimitedSocket = sock  # type: ignore[assignment]
        limited.start_limits(self.server.limits)
        raw = getattr(limited, "socket", None)
        if raw is not None:  # a peer that stalls inside a PDU must not block its reader forever
            raw.settimeout(self.server.limits.idle_timeout_s)
        assoc.dimse.__class__ = PeerFriendlyDimse  # likewise built in Association.__init__; see net/interop.py
        return assoc


def on_requested(event: Event) -> None:
    """EVT_REQUESTED: admit the association or reject it before negotiation (see the module docstring)."""
    assoc = event.assoc
    server = getattr(assoc, "_server", None)
    request = assoc.requestor.primitive
    contexts = getattr(request, "presentation_context_definition_list", None) or []
    reject: tuple[int, int, int] | None = None
    why = ""
    if not contexts:
        reject, why = REJECT_NO_REASON, "no presentation contexts proposed"
    elif isinstance(server, GuardedAssociationServer):
        reject = server.admit(assoc)
        why = "association limit reached (server.max_associations / max_associations_per_address)"
    if reject is None:
        return
    LOG.warning("rejecting association from %s (%s:%s): %s", str(getattr(request, "calling_ae_title", "")).strip(),
                assoc.requestor.address, assoc.requestor.port, why)
    assoc.acse.send_reject(*reject)
    assoc.is_rejected = True
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()  # as pynetdicom does after its own rejections: wait until the DUL has sent it


def on_connection_closed(event: Event) -> None:
    """EVT_CONN_CLOSE: free the association's slot."""
    server = getattr(event.assoc, "_server", None)
    if isinstance(server, GuardedAssociationServer):
        server.release(event.assoc)


#: Bound on every server this package starts.
LIMIT_HANDLERS = [(evt.EVT_REQUESTED, on_requested), (evt.EVT_CONN_CLOSE, on_connection_closed)]


def close_connection(assoc: Association) -> None:
    """End an association that may not be established yet (``abort()`` is only valid once it is)."""
    if assoc.is_established:
        assoc.abort()
    else:
        _shutdown(getattr(assoc.dul.socket, "socket", None))


__all__ = [
    "LIMIT_HANDLERS",
    "MAX_CONTROL_PDU",
    "GuardedAssociationServer",
    "GuardedRequestHandler",
    "Limits",
    "PduLimitedSocket",
    "close_connection",
    "on_requested",
]
