"""Cheaply copied presentation contexts (pacs_cae/net/contexts.py): the same copy as deepcopy, the server's own."""

from __future__ import annotations

import copy

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import MRImageStorage

from pacs_cae.config import Settings
from pacs_cae.net.contexts import CheaplyCopiedContext, cheaply_copied
from pacs_cae.net.server import ArchiveServer
from tests.net.test_handlers import FakeArchive


def _fields(cx: object) -> dict[str, object]:
    return dict(vars(cx))


def test_a_cheap_copy_equals_a_deep_copy_and_shares_nothing_mutable() -> None:
    original = build_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    original.context_id, original.scp_role, original.scu_role = 7, True, False
    cheap = cheaply_copied([original])[0]
    assert isinstance(cheap, CheaplyCopiedContext)
    twin = copy.deepcopy(cheap)
    assert type(twin) is CheaplyCopiedContext
    assert _fields(twin) == _fields(copy.deepcopy(original))
    assert twin._transfer_syntax is not cheap._transfer_syntax
    twin.add_transfer_syntax("1.2.840.10008.1.2.4.80")  # what negotiation changes stays in the copy
    twin.result, twin.context_id = 0, 9
    assert cheap.transfer_syntax == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert cheap.result is None and cheap.context_id == 7


def test_the_server_hands_each_association_cheap_copies() -> None:
    settings = Settings()
    settings.server.host, settings.server.port = "127.0.0.1", 0
    server = ArchiveServer(settings, FakeArchive())
    server.start()
    try:
        contexts = server._server.contexts  # type: ignore[union-attr]
        assert len(contexts) > 100 and all(isinstance(cx, CheaplyCopiedContext) for cx in contexts)
    finally:
        server.stop(grace_s=2)
