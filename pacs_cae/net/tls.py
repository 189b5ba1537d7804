"""DICOM TLS (PS3.15 Annex B, BCP 195 profile): the ssl.SSLContext objects the archive's sockets use.

Server side: our certificate and key, TLS 1.2 or newer, and (mutual TLS) client certificates required
and verified when ``server.tls_ca_certificates`` is set. Client side: the C-MOVE sub-association to a
remote marked ``tls = true`` verifies the remote's certificate (and host name) and presents ours if any.

Reading a certificate or key fails with :class:`~pacs_cae.config.ConfigError` naming the key, so ``serve``
reports it as a configuration error before it listens.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any, cast

from pacs_cae.config import ConfigError, Remote, ServerSettings
from pacs_cae.net.limits import GuardedRequestHandler

LOG = logging.getLogger(__name__)

#: BCP 195 (RFC 9325) / PS3.15 B.9: TLS 1.2 or newer only.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
#: TLS 1.2 suites BCP 195 recommends: forward-secret key exchange with AEAD ciphers only.
#: (TLS 1.3 suites are all AEAD + forward secret and are configured by OpenSSL, not by this string.)
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"
#: How long a connecting peer has to complete the TLS handshake (a LAN handshake takes milliseconds).
HANDSHAKE_TIMEOUT_S = 10.0


class DeferredHandshakeContext(ssl.SSLContext):
    """A server SSLContext whose handshake runs in the association's thread, not in the accept loop.

    pynetdicom wraps each accepted socket in its (single) accept thread; with the default
    ``do_handshake_on_connect=True`` a client that connects and sends nothing (a port scan, a health check,
    a plain-TCP SCU that waits) would stall every other connection. Deferred, :class:`TlsRequestHandler`
    completes it in the connection's own thread.
    """

    def wrap_socket(self, sock: socket.socket, server_side: bool = False,  # type: ignore[override]
                    do_handshake_on_connect: bool = True, **kwargs: Any) -> ssl.SSLSocket:
        if server_side:
            do_handshake_on_connect = False
        return super().wrap_socket(sock, server_side=server_side,
                                   do_handshake_on_connect=do_handshake_on_connect, **kwargs)


def _harden(context: ssl.SSLContext) -> None:
    """What both sides share: TLS >= 1.2, the BCP 195 TLS 1.2 suites, no compression or renegotiation."""
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE


def _load_chain(context: ssl.SSLContext, settings: ServerSettings) -> None:
    try:
        context.load_cert_chain(str(settings.tls_certificate), settings.tls_private_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_certificate / server.tls_private_key: cannot load "
                          f"{settings.tls_certificate!r} / {settings.tls_private_key!r}: {exc}") from None


def _load_ca(context: ssl.SSLContext, cafile: str) -> None:
    try:
        context.load_verify_locations(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_ca_certificates: cannot load {cafile!r}: {exc}") from None


def tls_enabled(settings: ServerSettings) -> bool:
    """Whether the archive listens with TLS (a server certificate is configured)."""
    return bool(settings.tls_certificate)


def server_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """The listening socket's context, or None for plain TCP (no ``server.tls_certificate``).

    With ``tls_ca_certificates`` set, a client must present a certificate signed by one of those CAs
    (mutual TLS); otherwise any TLS client is accepted and the AE-title rules apply as over plain TCP.
    """
    if not tls_enabled(settings):
        return None
    context = DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    _load_chain(context, settings)
    if settings.tls_ca_certificates:
        _load_ca(context, settings.tls_ca_certificates)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(settings: ServerSettings) -> ssl.SSLContext:
    """The context for our outgoing associations (C-MOVE sub-associations to ``tls = true`` remotes).

    The remote's certificate must chain to ``tls_ca_certificates`` (the system trust store when unset) and
    name the host we connect to. Our own certificate, when configured, is offered for the remote's mutual TLS.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    _harden(context)
    if settings.tls_ca_certificates:
        _load_ca(context, settings.tls_ca_certificates)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls_enabled(settings):
        _load_chain(context, settings)
    return context


def move_tls_args(settings: ServerSettings, remote: Remote,
                  context: ssl.SSLContext | None = None) -> tuple[ssl.SSLContext, str] | None:
    """``tls_args`` for ``AE.associate`` to ``remote`` (None when the remote speaks plain TCP).

    ``context`` lets a caller reuse one client context across C-MOVEs instead of re-reading the files.
    """
    if not remote.tls:
        return None
    return (context or client_context(settings)), remote.host


class TlsRequestHandler(GuardedRequestHandler):
    """pynetdicom's connection handler, with the TLS handshake first, in the connection's own thread.

    A peer that fails the handshake (plain TCP, no or an untrusted client certificate, too old a protocol)
    is logged in one line and disconnected before an association exists; otherwise pynetdicom would start
    one whose transport is already dead, and it would hold a slot until the ACSE timeout.
    """

    def handle(self) -> None:
        sock = self.request
        if isinstance(sock, ssl.SSLSocket) and not _handshake(sock, self.client_address):
            return
        super().handle()


def _handshake(sock: ssl.SSLSocket, peer: Any) -> bool:
    """Complete the server-side handshake within HANDSHAKE_TIMEOUT_S; on failure log, close, return False."""
    previous = sock.gettimeout()
    try:
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        sock.do_handshake()
        sock.settimeout(previous)
    except (OSError, ValueError) as exc:  # ssl.SSLError and socket timeouts are OSErrors
        LOG.warning("TLS handshake with %s:%s failed: %s", peer[0], peer[1], exc)
        sock.close()
        return False
    rdns = cast("tuple[tuple[tuple[str, str], ...], ...]", (sock.getpeercert() or {}).get("subject", ()))
    subject = dict(item for rdn in rdns for item in rdn)
    LOG.debug("TLS %s with %s:%s, client certificate %s", sock.version(), peer[0], peer[1],
              subject.get("commonName", "none"))
    return True
