"""Build the pynetdicom application entity: what the archive accepts, from whom, and how its sockets behave.

One function per concern so the serve loop, the tests and the benchmark all get the same AE.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
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
from pacs_cae.dicom.transcode import (
    ACCEPTED_TRANSFER_SYNTAXES,
    LOSSLESS_ENCODINGS,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
)
from pacs_cae.net import reactor, wire
from pacs_cae.vocabulary import QueryModel

LOG = logging.getLogger(__name__)

FIND_MODELS: dict[str, QueryModel] = {
    PatientRootQueryRetrieveInformationModelFind: QueryModel.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: QueryModel.STUDY_ROOT,
}
GET_MODELS: dict[str, QueryModel] = {
    PatientRootQueryRetrieveInformationModelGet: QueryModel.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelGet: QueryModel.STUDY_ROOT,
}
MOVE_MODELS: dict[str, QueryModel] = {
    PatientRootQueryRetrieveInformationModelMove: QueryModel.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelMove: QueryModel.STUDY_ROOT,
}
#: pynetdicom refuses to propose more presentation contexts than this on one association.
MAX_REQUESTED_CONTEXTS = 128


def build_ae(settings: ServerSettings) -> AE:
    """The archive's AE: Verification, every storage SOP class, Patient/Study Root FIND, GET and MOVE.

    Storage contexts accept both SCP/SCU roles so a C-GET SCU that proposes the storage SCP role gets it
    (the C-STORE sub-operations then run on the same association). Its associations, accepted or
    requested, run the waking DUL reactor (:mod:`pacs_cae.net.reactor`) and send each DIMSE message as one
    write (:mod:`pacs_cae.net.wire`).
    """
    reactor.install()
    wire.install()
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
        assert cx.abstract_syntax is not None  # pynetdicom's storage contexts all name their SOP class
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
    """Requested contexts for a C-MOVE sub-association that must carry these (SOP class, stored syntax) pairs.

    Per SOP class: one context with the uncompressed syntaxes (anything can be decoded to them), and one
    per other stored syntax with only that syntax, so a destination that accepts it gets the instance
    as stored, undecoded (the archive then picks per instance, :func:`pacs_cae.dicom.transcode.choose_syntax`).
    """
    contexts: list[PresentationContext] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    # every SOP class's uncompressed context first: within the limit, each instance then has a way through
    wanted: list[tuple[str, tuple[str, ...]]] = [
        (sop_class, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)) for sop_class, _ in pairs]
    wanted += [(sop_class, (syntax,)) for sop_class, syntax in pairs if syntax and syntax != ExplicitVRLittleEndian]
    for key in wanted:
        if key in seen:
            continue
        if len(contexts) >= MAX_REQUESTED_CONTEXTS:
            LOG.warning("C-MOVE needs more than %d presentation contexts; instances without one will fail",
                        MAX_REQUESTED_CONTEXTS)
            break
        seen.add(key)
        contexts.append(build_context(key[0], list(key[1])))
    return contexts


#: Syntaxes the archive can send any stored instance in (uncompressed LE, or encoded without loss).
RETRIEVE_SYNTAXES: frozenset[str] = frozenset([*UNCOMPRESSED_TRANSFER_SYNTAXES[:3], *LOSSLESS_ENCODINGS])


def prefer_requested_retrieve_syntaxes(event: Event) -> None:
    """EVT_CONN_OPEN handler: on storage contexts a C-GET SCU takes the SCP role for, honour its order.

    pynetdicom accepts the first of *our* syntaxes the peer listed, and our order (uncompressed first) is
    the safe one for incoming C-STORE. A C-GET SCU that lists RLE, JPEG-LS lossless, JPEG 2000 lossless or
    Deflated first (DCMTK getscu ``+xr``/``+xt``/``+xv``/``+xd``) wants that syntax; the archive can produce
    it from any stored instance, so it is accepted. Lossy syntaxes are never moved forward: an instance
    not stored in them could not be sent. pynetdicom has no per-association negotiation hook, so this
    wraps the association's ACSE negotiation step (pynetdicom 3.x).
    """
    acse = event.assoc.acse
    negotiate = acse._negotiate_as_acceptor

    def negotiate_with_retrieve_preferences() -> None:
        try:
            _reorder_for_retrieve(event.assoc)
        except Exception as exc:  # noqa: BLE001 - negotiation goes on with the default order
            LOG.warning("retrieve syntax preferences not applied: %s", exc)
        negotiate()

    acse._negotiate_as_acceptor = negotiate_with_retrieve_preferences  # type: ignore[method-assign]


def _reorder_for_retrieve(assoc: object) -> None:
    requestor, acceptor = assoc.requestor, assoc.acceptor  # type: ignore[attr-defined]
    scp_roles = {str(uid) for uid, item in requestor.role_selection.items() if item.scp_role}
    if not scp_roles or requestor.primitive is None:
        return
    requested: dict[str, list[str]] = {}
    for cx in requestor.primitive.presentation_context_definition_list:
        if str(cx.abstract_syntax) in scp_roles:
            requested.setdefault(str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax])
    contexts = []
    for cx in acceptor.supported_contexts:
        order = requested.get(str(cx.abstract_syntax))
        if order:
            ours = [str(ts) for ts in cx.transfer_syntax]
            first = [ts for ts in order if ts in RETRIEVE_SYNTAXES and ts in ours]
            cx.transfer_syntax = [*first, *[ts for ts in ours if ts not in first]]
        contexts.append(cx)
    acceptor.supported_contexts = contexts


#: The notification handlers every association gets, server side and C-MOVE side.
CONNECTION_HANDLERS = [(evt.EVT_CONN_OPEN, set_tcp_nodelay)]
