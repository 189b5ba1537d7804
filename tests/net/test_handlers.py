"""The network layer in-process: a real pynetdicom SCU against ArchiveServer over a fake archive.

Fast checks of status mapping and retrieve accounting that do not need the codec or a database; the
end-to-end suite (tests/e2e) repeats the important ones with DCMTK against the real archive.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Iterator, Sequence

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pacs_cae.archive.errors import ArchiveError, OutOfResources
from pacs_cae.config import Remote, Settings
from pacs_cae.net.server import ArchiveServer


def _mr(uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = uid or generate_uid()
    ds.PatientID = "P1"
    ds.StudyInstanceUID = "1.2.3"
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

    def store(self, ds: Dataset, calling_aet: str = "", **affected: str | None) -> None:
        if self.fail_store is not None:
            raise self.fail_store
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
                yield ref, ArchiveError(0xA700, "blob does not decode")
            else:
                yield ref, self.stored[ref.sop_instance_uid]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def served():
    settings = Settings()
    settings.server.host, settings.server.port = "127.0.0.1", 0
    archive = FakeArchive()
    server = ArchiveServer(settings, archive)
    host, port = server.start()
    yield settings, archive, port
    server.stop(grace_s=5)


def _scu(*contexts: str, calling: str = "TESTSCU") -> AE:
    ae = AE(ae_title=calling)
    for cx in contexts:
        ae.add_requested_context(cx)
    return ae


def test_echo_and_store_statuses(served) -> None:
    settings, archive, port = served
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


def test_store_mismatched_sop_class_is_a900(served) -> None:
    _, archive, port = served
    ae = _scu(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port)
    try:
        ds = _mr()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT class inside an MR-context request
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        # send under the MR context: pynetdicom takes the class from the dataset, so patch the request
        cx = assoc._get_valid_context(MRImageStorage, "", "scu")
        from pynetdicom.dimse_primitives import C_STORE
        from io import BytesIO
        from pydicom.filewriter import write_dataset
        from pydicom.filebase import DicomBytesIO

        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, False
        write_dataset(buf, ds)
        req = C_STORE()
        req.MessageID, req.Priority = 7, 2
        req.AffectedSOPClassUID = MRImageStorage
        req.AffectedSOPInstanceUID = ds.SOPInstanceUID
        req.DataSet = BytesIO(buf.getvalue())
        assoc.dimse.send_msg(req, cx.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
        assert rsp.Status == 0xA900
        assert ds.SOPInstanceUID not in archive.stored
    finally:
        assoc.release()


def test_find_yields_one_pending_per_match(served) -> None:
    _, archive, port = served
    for uid in [generate_uid() for _ in range(3)]:
        archive.stored[uid] = _mr(uid)
    ae = _scu(PatientRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port)
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
    assoc = ae.associate("127.0.0.1", port, ext_neg=[build_role(MRImageStorage, scp_role=True)],
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
    settings, archive, port = served
    uid = generate_uid()
    archive.stored[uid] = _mr(uid)
    ae = _scu(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port)
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
    dest_port = _free_port()

    def on_store(event):
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    dest_server = dest.start_server(("127.0.0.1", dest_port), block=False,
                                    evt_handlers=[(evt.EVT_C_STORE, on_store)])
    settings.remotes["DEST"] = Remote("127.0.0.1", dest_port)
    try:
        ae = _scu(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", port)
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
        stranger = _scu(Verification, calling="STRANGER").associate("127.0.0.1", port)
        assert stranger.is_rejected
        friend = _scu(Verification, calling="FRIEND").associate("127.0.0.1", port)
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
        assoc = _scu(Verification).associate("127.0.0.1", port)
        assert assoc.is_established
        accepted = server._server.active_associations
        assert accepted, "the server should hold the association"
        sock = accepted[0].dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assoc.release()
    finally:
        server.stop(grace_s=5)
