"""DICOM TLS in-process: configuration, the SSL contexts, and a pynetdicom SCU against ArchiveServer over TLS.

A throwaway CA, server and client certificate are made with `openssl` per module (tests/net/tls_pki.py). The
archive is a dict-backed fake: what is tested here is the transport, not storage. tests/e2e/test_tls_e2e.py
repeats the interoperability checks with DCMTK against a real `pacs-cae serve`.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage, StudyRootQueryRetrieveInformationModelMove, Verification

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pacs_cae.config import ConfigError, Remote, ServerSettings, Settings, load_settings
from pacs_cae.net.server import ArchiveServer
from pacs_cae.net.tls import client_context, move_tls_args, server_context
from tests.net.tls_pki import Pki, make_ca, make_leaf, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_settings(pki: Pki, *, mutual: bool) -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=1, tls_certificate=str(pki.server.cert),
                          tls_private_key=str(pki.server.key),
                          tls_ca_certificates=str(pki.ca.cert) if mutual else None)


def _client_ctx(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


# -- configuration ----------------------------------------------------------------------------------------
def test_tls_keys_load_from_toml_and_environment(pki: Pki, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(f'[server]\ntls_certificate = "{pki.server.cert}"\ntls_private_key = "{pki.server.key}"\n'
                    f'[remotes]\nSECURE = {{ host = "10.0.0.1", port = 2762, tls = true }}\n'
                    f'PLAIN = {{ host = "10.0.0.2", port = 104 }}\nSTR = "10.0.0.3:104"\n')
    s = load_settings(toml)
    assert s.server.tls_certificate == str(pki.server.cert) and s.server.tls_ca_certificates is None
    assert s.remotes["SECURE"] == Remote("10.0.0.1", 2762, tls=True)
    assert not s.remotes["PLAIN"].tls and not s.remotes["STR"].tls
    monkeypatch.setenv("PACS_CAE_SERVER_TLS_CA_CERTIFICATES", str(pki.ca.cert))
    assert load_settings(toml).server.tls_ca_certificates == str(pki.ca.cert)
    assert Settings().server.tls_certificate is None  # default: plain TCP


@pytest.mark.parametrize("overrides, message", [
    ({"server.tls_private_key": "KEY"}, "tls_private_key is set but server.tls_certificate is not"),
    ({"server.tls_ca_certificates": "CA"}, "tls_ca_certificates (mutual TLS) needs server.tls_certificate"),
    ({"server.tls_certificate": "/nonexistent/server.pem"}, "server.tls_certificate: no such file"),
    ({"remotes.X": {"host": "h", "port": 104, "tls": "maybe"}}, "remotes.X.tls: expected a boolean"),
    ({"remotes.X": {"host": "h", "port": 104, "secure": True}}, "remotes.X: expected"),
])
def test_inconsistent_tls_configuration_is_a_config_error(pki: Pki, overrides: dict[str, Any],
                                                          message: str) -> None:
    values = {k: (str(pki.server.key) if v == "KEY" else str(pki.ca.cert) if v == "CA" else v)
              for k, v in overrides.items()}
    with pytest.raises(ConfigError) as info:
        load_settings(overrides=values)
    assert message in str(info.value)


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(pki: Pki) -> None:
    settings = _tls_settings(pki, mutual=False)
    settings.tls_private_key = str(pki.client.key)
    with pytest.raises(ConfigError, match="server.tls_certificate"):
        server_context(settings)


def test_serve_refuses_a_mismatched_key_with_a_one_line_error(pki: Pki, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pacs_cae.cli import app

    config = tmp_path / "tls.toml"
    config.write_text(f'[server]\ntls_certificate = "{pki.server.cert}"\ntls_private_key = "{pki.client.key}"\n')
    result = CliRunner().invoke(app, ["serve", "--config", str(config), "--database-url",
                                      f"sqlite:///{tmp_path / 'a.db'}"])
    assert result.exit_code == 2
    assert "configuration error" in result.output and "server.tls_certificate" in result.output
    assert "Traceback" not in result.output


# -- contexts -----------------------------------------------------------------------------------------------
def test_contexts_require_tls_1_2_and_verify_as_configured(pki: Pki) -> None:
    assert server_context(ServerSettings()) is None
    one_way = server_context(_tls_settings(pki, mutual=False))
    mutual = server_context(_tls_settings(pki, mutual=True))
    assert one_way is not None and mutual is not None
    assert one_way.minimum_version == mutual.minimum_version == ssl.TLSVersion.TLSv1_2
    assert one_way.verify_mode == ssl.CERT_NONE and mutual.verify_mode == ssl.CERT_REQUIRED
    client = client_context(_tls_settings(pki, mutual=True))
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert move_tls_args(ServerSettings(), Remote("h", 104)) is None
    args = move_tls_args(ServerSettings(), Remote("10.1.2.3", 2762, tls=True))
    assert args is not None and args[1] == "10.1.2.3" and isinstance(args[0], ssl.SSLContext)


# -- the server over TLS ----------------------------------------------------------------------------------
class FakeArchive:
    """Just enough archive for C-ECHO and C-MOVE: datasets in a dict."""

    def __init__(self) -> None:
        self.stored: dict[str, Dataset] = {}

    def store(self, ds: Dataset, calling_aet: str = "", **_: Any) -> None:
        self.stored[str(ds.SOPInstanceUID)] = ds

    def find(self, query_model: str, identifier: Dataset) -> Iterator[Dataset]:
        return iter(())

    def locate(self, query_model: str, identifier: Dataset) -> list[Any]:
        from types import SimpleNamespace

        return [SimpleNamespace(sop_class_uid=MRImageStorage, sop_instance_uid=uid, served_uid=uid,
                                storage="lossless", transfer_syntax_uid=ExplicitVRLittleEndian)
                for uid in self.stored]

    def load(self, refs: Sequence[Any]) -> Iterator[tuple[Any, Dataset]]:
        for ref in refs:
            yield ref, self.stored[ref.sop_instance_uid]


@pytest.fixture()
def tls_server(pki: Pki) -> Iterator[tuple[Settings, FakeArchive, int, ArchiveServer]]:
    """ArchiveServer with mutual TLS on an OS-chosen port."""
    settings = Settings()
    settings.server = _tls_settings(pki, mutual=True)
    settings.server.port = 0
    archive = FakeArchive()
    server = ArchiveServer(settings, archive)
    _, port = server.start()
    yield settings, archive, port, server
    server.stop(grace_s=5)


def _echo(port: int, tls_args: tuple[ssl.SSLContext, str] | None) -> bool:
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE", tls_args=tls_args)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0x0000


def test_mutual_tls_echo_needs_a_client_certificate_from_the_ca(pki: Pki, tls_server, tmp_path: Path) -> None:
    *_, port, server = tls_server
    assert _echo(port, (_client_ctx(pki.ca.cert, pki.client.cert, pki.client.key), "localhost"))
    assert not _echo(port, (_client_ctx(pki.ca.cert), "localhost"))  # no client certificate
    rogue_ca = make_ca(tmp_path, "rogue")
    rogue = make_leaf(tmp_path, rogue_ca, "rogue-client")
    assert not _echo(port, (_client_ctx(pki.ca.cert, rogue.cert, rogue.key), "localhost"))
    assert not _echo(port, None)  # plain TCP to the TLS port
    # and the server is still fine afterwards
    assert _echo(port, (_client_ctx(pki.ca.cert, pki.client.cert, pki.client.key), "127.0.0.1"))
    # failed handshakes left no half-open association behind to wait for (TlsRequestHandler)
    started = time.monotonic()
    server.stop(grace_s=30)
    assert time.monotonic() - started < 5


def test_one_way_tls_accepts_a_client_without_certificate(pki: Pki) -> None:
    settings = Settings()
    settings.server = _tls_settings(pki, mutual=False)
    settings.server.port = 0
    server = ArchiveServer(settings, FakeArchive())
    _, port = server.start()
    try:
        assert _echo(port, (_client_ctx(pki.ca.cert), "localhost"))
        assert not _echo(port, None)
    finally:
        server.stop(grace_s=5)


def test_an_idle_connection_does_not_block_other_handshakes(pki: Pki, tls_server) -> None:
    """pynetdicom wraps sockets in its accept thread: the handshake must not run there.

    (DeferredHandshakeContext; with the default handshake-on-wrap this test times out.)
    """
    *_, port, _ = tls_server
    idle = socket.create_connection(("127.0.0.1", port))  # connects, never says hello
    try:
        time.sleep(0.2)
        started = time.monotonic()
        assert _echo(port, (_client_ctx(pki.ca.cert, pki.client.cert, pki.client.key), "localhost"))
        assert time.monotonic() - started < 4
    finally:
        idle.close()


def _mr(uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, uid
    ds.PatientID, ds.StudyInstanceUID = "P1", "1.2.3"
    return ds


def test_c_move_opens_the_sub_association_with_tls_when_the_remote_says_so(pki: Pki, tls_server) -> None:
    settings, archive, port, _ = tls_server
    uids = [generate_uid() for _ in range(2)]
    for uid in uids:
        archive.stored[uid] = _mr(uid)
    received: list[str] = []
    dest = AE(ae_title="DEST")
    dest.add_supported_context(MRImageStorage)
    dest_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca.cert))
    dest_ctx.verify_mode = ssl.CERT_REQUIRED  # the destination wants our (server.tls_certificate) certificate
    dest_ctx.load_cert_chain(str(pki.client.cert), str(pki.client.key))

    def on_store(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    dest_server = dest.start_server(("127.0.0.1", 0), block=False, ssl_context=dest_ctx,
                                    evt_handlers=[(evt.EVT_C_STORE, on_store)])
    dest_port = int(dest_server.server_address[1])
    settings.remotes["DEST"] = Remote("127.0.0.1", dest_port, tls=True)
    settings.remotes["DESTPLAIN"] = Remote("127.0.0.1", dest_port)  # same TLS port, but we would speak plain
    try:
        ae = AE(ae_title="MOVESCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        client = _client_ctx(pki.ca.cert, pki.client.cert, pki.client.key)
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE", tls_args=(client, "localhost"))
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", "1.2.3"
        secure = list(assoc.send_c_move(query, "DEST", StudyRootQueryRetrieveInformationModelMove))
        plain = list(assoc.send_c_move(query, "DESTPLAIN", StudyRootQueryRetrieveInformationModelMove))
        assoc.release()
    finally:
        dest_server.shutdown()
    assert secure[-1][0].Status == 0x0000 and secure[-1][0].NumberOfCompletedSuboperations == 2
    assert sorted(received) == sorted(uids)
    assert plain[-1][0].Status != 0x0000 and len(received) == 2
