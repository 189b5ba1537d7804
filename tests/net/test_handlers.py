"""The network layer in-process: a real pynetdicom SCU against ArchiveServer over a fake archive.

Fast checks of status mapping and retrieve accounting that do not need the codec or a database; the
end-to-end suite (tests/e2e) repeats the important ones with DCMTK against the real archive.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pacs_cae.archive.errors import ArchiveError, OutOfResources
from pacs_cae.archive.ingest import validate
from pacs_cae.config import Remote, Settings
from pacs_cae.net.handlers import ArchiveHandlers
from pacs_cae.net.server import ArchiveServer
from pacs_cae.testing.server_process import free_port


def _mr(uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = uid or generate_uid()
    ds.PatientID = "P1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    return ds


@dataclass
class Ref:
    sop_class_uid: str
    sop_instance_uid: str
    served_uid: str = ""
    storage: str = "lossless"
    transfer_syntax_uid: str = ExplicitVRLittleEndian


class FakeArchive:
    """Stores datasets in a dict; ``fail_store`` / ``broken`` inject failures."""

    def __init__(self) -> None:
        self.stored: dict[str, Dataset] = {}
        self.fail_store: Exception | None = None
        self.broken: set[str] = set()

    def store(self, ds: Dataset, calling_aet: str = "", *, affected_sop_class: str | None = None,
              affected_sop_instance: str | None = None, encoded: object = None) -> None:
        if self.fail_store is not None:
            raise self.fail_store
        validate(ds, affected_sop_class, affected_sop_instance)  # the archive's own check, as in Archive.store
        self.stored[ds.SOPInstanceUID] = ds

    def find(self, query_model: str, identifier: Dataset) -> Iterator[Dataset]:
        for uid in self.stored:
            match = Dataset()
            match.QueryRetrieveLevel = identifier.QueryRetrieveLevel
            match.SOPInstanceUID = uid
            yield match

    def locate(self, query_model: str, identifier: Dataset) -> list[Ref]:
        return [Ref(MRImageStorage, uid) for uid in self.stored]

    def load(self, refs: Sequence[Ref]) -> Iterator[tuple[Ref, Dataset | ArchiveError]]:
        for ref in refs:
            if ref.sop_instance_uid in self.broken:
                yield ref, ArchiveError("blob does not decode", status=0xA700)
            else:
                yield ref, self.stored[ref.sop_instance_uid]


@pytest.fixture()
def served():
    settings = Settings()
    settings.server.host, settings.server.port = "127.0.0.1", 0
    archive = FakeArchive()
    server = ArchiveServer(settings, archive)
    _host, port = server.start()
    yield settings, archive, port
    server.stop(grace_s=5)


def _scu(*contexts: str, calling: str = "TESTSCU") -> AE:
    ae = AE(ae_title=calling)
    for cx in contexts:
        ae.add_requested_context(cx)
    return ae


def test_echo_and_store_statuses(served) -> None:
    _settings, archive, port = served
    ae = _scu(Verification, MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        good = _mr()
        assert assoc.send_c_store(good).Status == 0x0000
        assert good.SOPInstanceUID in archive.stored
        archive.fail_store = OutOfResources("disk full")
        assert assoc.send_c_store(_mr()).Status == 0xA700
        archive.fail_store = RuntimeError("bug")
        assert assoc.send_c_store(_mr()).Status == 0xA700
        archive.fail_store = None
        # the server keeps serving on the same association
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_store_mismatched_sop_class_or_instance_is_a900() -> None:
    """A data set whose SOP Class/Instance differ from the C-STORE request's Affected ones is refused.

    pynetdicom's SCU always takes the Affected UIDs from the data set, so the handler is called directly.
    """
    archive = FakeArchive()
    handlers = ArchiveHandlers(archive, Settings())
    ds = _mr()
    requestor = SimpleNamespace(ae_title="TESTSCU", address="127.0.0.1", port=1)

    def event(affected_class: str, affected_instance: str) -> SimpleNamespace:
        request = SimpleNamespace(AffectedSOPClassUID=affected_class, AffectedSOPInstanceUID=affected_instance)
        return SimpleNamespace(request=request, dataset=ds, file_meta=ds.file_meta,
                               assoc=SimpleNamespace(requestor=requestor),
                               context=SimpleNamespace(transfer_syntax=ExplicitVRLittleEndian))

    assert handlers.on_store(event(CTImageStorage, ds.SOPInstanceUID)) == 0xA900
    assert handlers.on_store(event(MRImageStorage, generate_uid())) == 0xA900
    assert archive.stored == {}
    assert handlers.on_store(event(MRImageStorage, ds.SOPInstanceUID)) == 0x0000
    assert ds.SOPInstanceUID in archive.stored


def test_find_yields_one_pending_per_match(served) -> None:
    _, archive, port = served
    for uid in [generate_uid() for _ in range(3)]:
        archive.stored[uid] = _mr(uid)
    ae = _scu(PatientRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE")
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.SOPInstanceUID = ""
        statuses = [s.Status for s, _ in assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind)]
    finally:
        assoc.release()
    assert statuses == [0xFF00, 0xFF00, 0xFF00, 0x0000]


def test_get_counts_a_broken_instance_as_failed(served) -> None:
    _, archive, port = served
    uids = [generate_uid() for _ in range(3)]
    for uid in uids:
        archive.stored[uid] = _mr(uid)
    archive.broken.add(uids[1])
    received: list[str] = []

    def on_store(event):
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    ae = _scu(StudyRootQueryRetrieveInformationModelGet, MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE", ext_neg=[build_role(MRImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = "1.2.3"
        responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    final, identifier = responses[-1]
    assert final.Status == 0xB000
    assert final.NumberOfCompletedSuboperations == 2 and final.NumberOfFailedSuboperations == 1
    failed = identifier["FailedSOPInstanceUIDList"]
    assert failed.VM == 1 and failed.value == uids[1]
    assert sorted(received) == sorted([uids[0], uids[2]])


def test_move_to_unknown_destination_is_a801(served) -> None:
    _settings, archive, port = served
    uid = generate_uid()
    archive.stored[uid] = _mr(uid)
    ae = _scu(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE")
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = "1.2.3"
        responses = list(assoc.send_c_move(query, "NOWHERE", StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    assert responses[-1][0].Status == 0xA801


def test_move_to_configured_remote_delivers(served) -> None:
    settings, archive, port = served
    uids = [generate_uid() for _ in range(2)]
    for uid in uids:
        archive.stored[uid] = _mr(uid)
    received: list[str] = []
    dest = AE(ae_title="DEST")
    dest.add_supported_context(MRImageStorage)
    dest_port = free_port()

    def on_store(event):
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    dest_server = dest.start_server(("127.0.0.1", dest_port), block=False,
                                    evt_handlers=[(evt.EVT_C_STORE, on_store)])
    settings.remotes["DEST"] = Remote("127.0.0.1", dest_port)
    try:
        ae = _scu(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE")
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = "1.2.3"
        responses = list(assoc.send_c_move(query, "DEST", StudyRootQueryRetrieveInformationModelMove))
        assoc.release()
    finally:
        dest_server.shutdown()
    final = responses[-1][0]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 2
    assert sorted(received) == sorted(uids)


def test_calling_aet_not_allowed_is_rejected() -> None:
    settings = Settings()
    settings.server.host, settings.server.port = "127.0.0.1", 0
    settings.server.allowed_calling_aets = ["FRIEND"]
    server = ArchiveServer(settings, FakeArchive())
    _, port = server.start()
    try:
        stranger = _scu(Verification, calling="STRANGER").associate("127.0.0.1", port, ae_title="PACSCAE")
        assert stranger.is_rejected
        friend = _scu(Verification, calling="FRIEND").associate("127.0.0.1", port, ae_title="PACSCAE")
        assert friend.is_established
        friend.release()
    finally:
        server.stop(grace_s=5)


def test_accepted_socket_has_tcp_nodelay() -> None:
    settings = Settings()
    settings.server.host, settings.server.port = "127.0.0.1", 0
    server = ArchiveServer(settings, FakeArchive())
    _, port = server.start()
    try:
        assoc = _scu(Verification).associate("127.0.0.1", port, ae_title="PACSCAE")
        assert assoc.is_established
        accepted = server._server.active_associations
        assert accepted, "the server should hold the association"
        sock = accepted[0].dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assoc.release()
    finally:
        server.stop(grace_s=5)


def test_stop_lets_an_open_association_finish() -> None:
    """Shutdown stops accepting at once but lets an association already open finish its work."""
    import threading

    settings = Settings()
    settings.server.host, settings.server.port = "127.0.0.1", 0
    server = ArchiveServer(settings, FakeArchive())
    _, port = server.start()
    assoc = _scu(Verification).associate("127.0.0.1", port, ae_title="PACSCAE")
    assert assoc.is_established
    stopper = threading.Thread(target=server.stop, kwargs={"grace_s": 20})
    stopper.start()

    def accepts() -> bool:
        probe = _scu(Verification).associate("127.0.0.1", port, ae_title="PACSCAE")
        if probe.is_established:
            probe.release()
            return True
        return False

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and accepts():
        time.sleep(0.05)  # until stop() has closed the listening socket
    assert not accepts(), "still accepting after stop()"
    assert stopper.is_alive(), "stop() must wait for the open association"
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    stopper.join(10)
    assert not stopper.is_alive()


def test_find_honours_c_cancel(served) -> None:
    _, archive, port = served
    for uid in [generate_uid() for _ in range(40)]:
        archive.stored[uid] = _mr(uid)
    slow_find = archive.find

    def find(query_model: str, identifier: Dataset) -> Iterator[Dataset]:
        for match in slow_find(query_model, identifier):
            time.sleep(0.02)
            yield match

    archive.find = find  # type: ignore[method-assign]
    ae = _scu(PatientRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE")
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.SOPInstanceUID = ""
        statuses = []
        for status, _ in assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind, msg_id=9):
            statuses.append(status.Status)
            if len(statuses) == 1:
                cx = assoc._get_valid_context(PatientRootQueryRetrieveInformationModelFind, "", "scu")
                assoc.send_c_cancel(9, cx.context_id)
    finally:
        assoc.release()
    assert statuses[-1] == 0xFE00
    assert len(statuses) < 40


def test_move_all_refused_by_destination_is_a702(served) -> None:
    settings, archive, port = served
    uids = [generate_uid() for _ in range(2)]
    for uid in uids:
        archive.stored[uid] = _mr(uid)
    dest = AE(ae_title="FULLDISK")
    dest.add_supported_context(MRImageStorage)
    dest_port = free_port()
    dest_server = dest.start_server(("127.0.0.1", dest_port), block=False,
                                    evt_handlers=[(evt.EVT_C_STORE, lambda event: 0xA700)])
    settings.remotes["FULLDISK"] = Remote("127.0.0.1", dest_port)
    try:
        assoc = _scu(StudyRootQueryRetrieveInformationModelMove).associate("127.0.0.1", port, ae_title="PACSCAE")
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = "1.2.3"
        responses = list(assoc.send_c_move(query, "FULLDISK", StudyRootQueryRetrieveInformationModelMove))
        assoc.release()
    finally:
        dest_server.shutdown()
    pending = [rsp for rsp, _ in responses[:-1]]
    assert [rsp.Status for rsp in pending] == [0xFF00, 0xFF00]
    assert [rsp.NumberOfRemainingSuboperations for rsp in pending] == [1, 0]
    final, identifier = responses[-1]
    assert final.Status == 0xA702 and final.NumberOfFailedSuboperations == 2
    assert sorted(identifier.FailedSOPInstanceUIDList) == sorted(uids)
