"""Build the pynetdicom application entity: what the archive accepts, from whom, and how its sockets behave.

One function per concern so the serve loop, the tests and the benchmark all get the same AE.
"""

from __future__ import annotations

import logging
import socket
from typing import Sequence

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pacs_cae.config import ServerSettings

LOG = logging.getLogger(__name__)

#: Uncompressed syntaxes first: they are what every SCU can read back.
UNCOMPRESSED_TRANSFER_SYNTAXES: list[UID] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]
#: What a modality may send us on C-STORE (the archive decodes it with pydicom's pixel handlers).
ACCEPTED_TRANSFER_SYNTAXES: list[UID] = UNCOMPRESSED_TRANSFER_SYNTAXES + [
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]

FIND_MODELS: dict[str, str] = {
    PatientRootQueryRetrieveInformationModelFind: "P",
    StudyRootQueryRetrieveInformationModelFind: "S",
}
GET_MODELS: dict[str, str] = {
    PatientRootQueryRetrieveInformationModelGet: "P",
    StudyRootQueryRetrieveInformationModelGet: "S",
}
MOVE_MODELS: dict[str, str] = {
    PatientRootQueryRetrieveInformationModelMove: "P",
    StudyRootQueryRetrieveInformationModelMove: "S",
}
#: pynetdicom refuses to propose more presentation contexts than this on one association.
MAX_REQUESTED_CONTEXTS = 128


def build_ae(settings: ServerSettings) -> AE:
    """The archive's AE: Verification, every storage SOP class, Patient/Study Root FIND, GET and MOVE.

    Storage contexts accept both SCP/SCU roles so a C-GET SCU that proposes the storage SCP role gets it
    (the C-STORE sub-operations then run on the same association).
    """
    ae = AE(ae_title=settings.ae_title)
    # pynetdicom counts connections still negotiating as associations; pacs_cae.net.limits admits
    # associations itself (established ones only), so pynetdicom's own cap only has to bound the threads.
    ae.maximum_associations = settings.max_associations + settings.max_pending_connections + 1
    ae.maximum_pdu_size = settings.max_pdu_size
    # Empty list = any calling AE; otherwise pynetdicom rejects the association ("calling AE not recognised").
    ae.require_calling_aet = list(settings.allowed_calling_aets)
    ae.require_called_aet = not settings.accept_any_called_aet  # else "called AE title not recognised"
    ae.acse_timeout = settings.association_request_timeout_s  # also the ARTIM timer for the A-ASSOCIATE-RQ
    ae.dimse_timeout = settings.idle_timeout_s
    ae.network_timeout = settings.idle_timeout_s
    ae.add_supported_context(Verification, ACCEPTED_TRANSFER_SYNTAXES)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for sop_class in [*FIND_MODELS, *GET_MODELS, *MOVE_MODELS]:
        ae.add_supported_context(sop_class, UNCOMPRESSED_TRANSFER_SYNTAXES)
    return ae


def set_tcp_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle on the association's socket (accepted and outgoing alike).

    DIMSE exchanges many small PDUs (command sets, pending responses); with Nagle plus delayed ACKs every
    round trip can stall for ~40 ms.
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # e.g. a socket already closed by the peer
        LOG.debug("could not set TCP_NODELAY: %s", exc)


def storage_contexts_for(pairs: Sequence[tuple[str, str]]) -> list[PresentationContext]:
    """Requested contexts for a C-MOVE sub-association that must carry these (SOP class, transfer syntax) pairs.

    An uncompressed dataset can be sent in any uncompressed syntax the destination picks; a compressed one
    needs its own syntax, so it gets a context of its own.
    """
    contexts: list[PresentationContext] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for sop_class, syntax in pairs:
        if syntax and UID(syntax).is_compressed:
            syntaxes: tuple[str, ...] = (syntax,)
        else:
            syntaxes = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        key = (sop_class, syntaxes)
        if key in seen:
            continue
        seen.add(key)
        contexts.append(build_context(sop_class, list(syntaxes)))
        if len(contexts) >= MAX_REQUESTED_CONTEXTS:
            LOG.warning("C-MOVE needs more than %d presentation contexts; the rest will fail",
                        MAX_REQUESTED_CONTEXTS)
            break
    return contexts


#: The notification handlers every association gets, server side and C-MOVE side.
CONNECTION_HANDLERS = [(evt.EVT_CONN_OPEN, set_tcp_nodelay)]
