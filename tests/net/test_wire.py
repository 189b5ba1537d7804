"""Whole DIMSE messages in one write (pacs_cae/net/wire.py and the DUL side in pacs_cae/net/reactor.py)."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import MRImageStorage, StudyRootQueryRetrieveInformationModelGet, Verification

from pacs_cae.config import Settings
from pacs_cae.net.reactor import WakingDUL
from pacs_cae.net.server import ArchiveServer
from pacs_cae.net.wire import BatchedDimse, EncodedMessage
from pacs_cae.testing.factories import make_mr_series
from tests.net.test_handlers import FakeArchive

#: DCMTK's default maximum PDU: a 512x512 slice is 33 P-DATA-TF PDUs to such a peer.
PEER_MAX_PDU = 16384


@pytest.fixture
def served() -> Iterator[tuple[FakeArchive, ArchiveServer]]:
    settings = Settings()
    settings.server.host, settings.server.port = "127.0.0.1", 0
    archive = FakeArchive()
    server = ArchiveServer(settings, archive)  # builds the AE: installs the reactor and the batched DIMSE
    server.start()
    yield archive, server
    server.stop(grace_s=5)


def _fragments(n_bytes: int = 300_000) -> list[P_DATA]:
    """The P-DATA primitives pynetdicom makes of a C-STORE-RQ carrying ``n_bytes`` of data set."""
    primitive = C_STORE()
    primitive.MessageID, primitive.Priority = 7, 2
    primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID = MRImageStorage, generate_uid()
    primitive.DataSet = BytesIO(bytes(range(256)) * (n_bytes // 256))
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return list(message.encode_msg(1, PEER_MAX_PDU))


def test_an_encoded_message_is_the_bytes_pynetdicom_sends_pdu_by_pdu() -> None:
    parts = _fragments()
    assert len(parts) > 10
    assert EncodedMessage(parts).encode() == b"".join(P_DATA_TF(part).encode() for part in parts)


class _Recorder:
    """Stands in for an AssociationSocket: records what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: Any) -> None:
        self.sent.append(bytes(data))


def _idle_dul() -> WakingDUL:
    ae = AE("WIRE")
    dul = WakingDUL(Association(ae, "requestor"))
    dul.socket = _Recorder()  # type: ignore[assignment]
    return dul


def test_in_data_transfer_the_dul_writes_a_message_once() -> None:
    dul = _idle_dul()
    dul.state_machine.current_state = "Sta6"
    parts = _fragments()
    dul.to_provider_queue.put(EncodedMessage(parts))
    assert dul._process_recv_primitive()
    assert dul.socket.sent == [EncodedMessage(parts).encode()]  # type: ignore[union-attr]
    assert not dul.to_provider_queue.queue and not dul.event_queue.queue


def test_outside_data_transfer_the_state_machine_judges_each_fragment() -> None:
    dul = _idle_dul()
    dul.state_machine.current_state = "Sta7"  # awaiting A-RELEASE-RP: P-DATA goes through AR-7
    parts = _fragments()
    dul.to_provider_queue.put(EncodedMessage(parts))
    assert dul._process_recv_primitive()
    assert list(dul.to_provider_queue.queue) == parts  # plain primitives again, in order
    assert list(dul.event_queue.queue) == ["Evt9"]
    assert dul.socket.sent == []  # type: ignore[union-attr]


def test_events_queued_ahead_of_a_message_are_handled_first() -> None:
    dul = _idle_dul()
    dul.state_machine.current_state = "Sta6"
    dul.event_queue.put("Evt10")
    dul.to_provider_queue.put(EncodedMessage(_fragments()))
    assert not dul._process_recv_primitive()
    assert dul.socket.sent == [] and len(dul.to_provider_queue.queue) == 1  # type: ignore[union-attr]


def test_a_c_get_slice_leaves_the_archive_in_one_write(served: tuple[FakeArchive, ArchiveServer]) -> None:
    """Real associations: every sub-operation's C-STORE-RQ is one send; pynetdicom's own path makes 33+."""
    archive, server = served
    series = make_mr_series(3, 512, 512, 12)
    for ds in series:
        archive.stored[ds.SOPInstanceUID] = ds
    received: dict[str, np.ndarray] = {}

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received[ds.SOPInstanceUID] = ds.pixel_array
        return 0x0000

    ae = AE("WIRESCU")
    ae.maximum_pdu_size = PEER_MAX_PDU
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", server.address[1], ae_title="PACSCAE",
                         ext_neg=[build_role(MRImageStorage, scp_role=True)], evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    accepted = list(server._server.active_associations)  # type: ignore[union-attr]
    assert len(accepted) == 1 and isinstance(accepted[0].dimse, BatchedDimse)
    sends = 0
    socket = accepted[0].dul.socket
    original = socket.send

    def counting(data: Any) -> None:
        nonlocal sends
        sends += 1
        original(data)

    socket.send = counting
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = series[0].StudyInstanceUID
        responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    assert responses[-1][0].Status == 0x0000
    assert set(received) == {ds.SOPInstanceUID for ds in series}
    for ds in series:
        assert np.array_equal(received[ds.SOPInstanceUID], ds.pixel_array)
    assert sends <= 2 * len(series) + 2  # per slice a C-STORE-RQ and a pending C-GET-RSP; the final one, A-RELEASE-RP


def test_a_peer_watching_pdus_still_sees_each_one(served: tuple[FakeArchive, ArchiveServer]) -> None:
    """Handlers of EVT_PDU_SENT keep pynetdicom's per-PDU path (the requestor here runs our classes too)."""
    _archive, server = served
    seen: list[str] = []
    ae = AE("WIRESCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.address[1], ae_title="PACSCAE",
                         evt_handlers=[(evt.EVT_PDU_SENT, lambda event: seen.append(type(event.pdu).__name__))])
    try:
        assert isinstance(assoc.dimse, BatchedDimse)
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert "P_DATA_TF" in seen
