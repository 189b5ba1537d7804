"""The DIMSE event handlers: thin translations between pynetdicom events and the archive's use cases.

Every handler catches everything: a failing request gets a failure status and a log line, never a crashed
association thread. Success on C-STORE is answered only after ``archive.store`` returned, i.e. after the
transaction holding the instance committed.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, cast

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from pacs_cae.archive.errors import ArchiveError, CannotUnderstand
from pacs_cae.archive.query import InstanceRef
from pacs_cae.archive.retrieve import for_peer
from pacs_cae.config import Settings
from pacs_cae.dicom.integrity import EncodedDataSet
from pacs_cae.net.ae import (
    CONNECTION_HANDLERS,
    FIND_MODELS,
    GET_MODELS,
    MOVE_MODELS,
    prefer_requested_retrieve_syntaxes,
    storage_contexts_for,
)
from pacs_cae.net.idle import serving_is_not_idle
from pacs_cae.net.tls import move_tls_args
from pacs_cae.vocabulary import QueryModel, StorageKind

LOG = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
#: C-GET/C-MOVE have no plain A700; A701 is "out of resources: unable to calculate number of matches".
RETRIEVE_OUT_OF_RESOURCES = 0xA701


class ArchiveLike(Protocol):
    """What the handlers need from :class:`pacs_cae.archive.Archive` (kept narrow for tests)."""

    def store(self, ds: Dataset, calling_aet: str = "", *, affected_sop_class: str | None = None,
              affected_sop_instance: str | None = None, encoded: EncodedDataSet | None = None) -> Any: ...
    def find(self, query_model: QueryModel, identifier: Dataset) -> Iterator[Dataset]: ...
    def locate(self, query_model: QueryModel, identifier: Dataset) -> list[InstanceRef]: ...
    def load(self, refs: Sequence[InstanceRef]) -> Iterator[tuple[InstanceRef, Dataset | ArchiveError]]: ...


def _calling_aet(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


@contextmanager
def _encoded(event: Event) -> Iterator[EncodedDataSet | None]:
    """The request's data set bytes as received (no copy), for the archive's completeness check.

    None for deflated syntaxes: those bytes are compressed, and pydicom inflated them to decode.
    """
    stream, syntax = getattr(event.request, "DataSet", None), event.context.transfer_syntax
    if not isinstance(stream, io.BytesIO) or syntax.is_deflated:
        yield None
        return
    with stream.getbuffer() as view:
        yield EncodedDataSet(view, syntax.is_implicit_VR, syntax.is_little_endian)


def _identifier(event: Event) -> Dataset:
    """The request's identifier; one pydicom cannot decode is the SCU's error (0xC000 "unable to process")."""
    try:
        return event.identifier
    except Exception as exc:
        raise CannotUnderstand(f"identifier cannot be decoded: {exc}") from exc


def _ref_uid(ref: InstanceRef) -> str:
    """The SOP Instance UID a retrieve delivers for this reference (what the SCU will see)."""
    return ref.served_uid or ref.sop_instance_uid


def _served_syntax(ref: InstanceRef) -> str:
    """The transfer syntax a retrieve sends: as received for lossless objects, uncompressed for CAE ones."""
    if ref.storage == StorageKind.CAE:
        return str(ExplicitVRLittleEndian)
    return ref.transfer_syntax_uid or ""


def accepted_syntaxes(assoc: Any, sop_class: str) -> list[str]:
    """The transfer syntaxes ``assoc`` accepted for sending ``sop_class`` (our storage SCU role)."""
    return [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
            if cx.abstract_syntax == sop_class and cx.as_scu]


class SubAssociation:
    """Captures the C-MOVE sub-association pynetdicom opens, so each instance can be sent in a syntax the
    destination accepted (EVT_ACCEPTED fires before ``AE.associate`` returns, in the handler's thread)."""

    def __init__(self) -> None:
        self.assoc: Any = None

    def on_accepted(self, event: Event) -> None:
        self.assoc = event.assoc
        keep_responses_for_the_sender(event.assoc)


def keep_responses_for_the_sender(assoc: Any) -> None:
    """Close a race in pynetdicom 3.0's reactor pause, which loses C-STORE responses of C-MOVE sub-operations.

    ``send_c_store`` clears ``_reactor_checkpoint`` and goes on once ``_is_paused`` is true; the reactor sets
    ``_is_paused`` just before ``_reactor_checkpoint.wait()`` and clears it just after. When the reactor thread
    is preempted between the two (likely with busy threads on two cores), the sender sends while the reactor
    still runs one more poll: it takes the C-STORE-RSP off the queue, logs "Received unexpected C-STORE
    service message" and drops it, and the sender waits out the DIMSE timeout (a failed sub-operation; seen
    with 4 parallel C-MOVEs). Here a response the reactor takes while a sender has paused it goes back on the
    queue, to the sender waiting for it.
    """
    serve = assoc._serve_request

    def serve_request(msg: Any, context_id: int) -> None:
        if not getattr(msg, "is_valid_request", True) and not assoc._reactor_checkpoint.is_set():
            assoc.dimse.msg_queue.put((context_id, msg))
            return
        serve(msg, context_id)

    assoc._serve_request = serve_request


def _undeliverable(ref: InstanceRef) -> Dataset:
    """A stand-in for an instance the archive could not load.

    pynetdicom counts a pending (status, dataset) whose C-STORE sub-operation raises as a failed
    sub-operation and lists the dataset's SOP Instance UID in the Failed SOP Instance UID List; a dataset
    with no file meta is refused by ``send_c_store`` before anything reaches the peer.
    """
    ds = Dataset()
    ds.SOPClassUID = ref.sop_class_uid or "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = _ref_uid(ref)
    return ds


class ArchiveHandlers:
    """Binds an archive and the settings to pynetdicom events; :meth:`bindings` gives ``evt_handlers``."""

    def __init__(self, archive: ArchiveLike, settings: Settings) -> None:
        self.archive = archive
        self.settings = settings

    def bindings(self) -> list[tuple[Any, Any]]:
        """The ``evt_handlers`` list for ``AE.start_server``."""
        handlers: list[tuple[Any, Any]] = [
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_CONN_OPEN, prefer_requested_retrieve_syntaxes),
            (evt.EVT_CONN_OPEN, serving_is_not_idle),
        ]
        if self.settings.server.tcp_nodelay:
            handlers.extend(CONNECTION_HANDLERS)
        return handlers

    # -- association -----------------------------------------------------------------------------------
    def on_accepted(self, event: Event) -> None:
        """Log who connected (one line per association)."""
        rq = event.assoc.requestor
        LOG.info("association accepted from %s (%s:%s)", _calling_aet(event), rq.address, rq.port)

    def on_rejected(self, event: Event) -> None:
        """Log a rejected association, e.g. a calling AE title not in ``allowed_calling_aets``."""
        rq = event.assoc.requestor
        LOG.warning("association rejected for %s (%s:%s)", _calling_aet(event), rq.address, rq.port)

    # -- C-ECHO ----------------------------------------------------------------------------------------
    def on_echo(self, event: Event) -> int:
        """Verification always succeeds once the association is accepted."""
        return SUCCESS

    # -- C-STORE ---------------------------------------------------------------------------------------
    def on_store(self, event: Event) -> int:
        """Archive one instance; 0x0000 only after ``archive.store`` returned (it commits).

        The archive checks the data set (missing UIDs 0xC001 before a mismatch with the request 0xA900, an
        incomplete stream or Pixel Data 0xC003, ...); a data set pydicom cannot decode at all is 0xC000.
        """
        request = cast(C_STORE, event.request)  # evt.EVT_C_STORE carries a C-STORE request
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            ds_instance = str(ds.get("SOPInstanceUID", ""))
        except Exception as exc:  # noqa: BLE001 - any decoding failure of the received bytes is 0xC000
            LOG.error("C-STORE from %s: data set cannot be parsed: %s", _calling_aet(event), exc)
            return CANNOT_UNDERSTAND
        try:
            with _encoded(event) as encoded:
                outcome = self.archive.store(ds, calling_aet=_calling_aet(event),
                                             affected_sop_class=str(request.AffectedSOPClassUID),
                                             affected_sop_instance=str(request.AffectedSOPInstanceUID),
                                             encoded=encoded)
        except ArchiveError as exc:
            LOG.error("C-STORE %s from %s refused: %s", ds_instance, _calling_aet(event), exc)
            return exc.status
        except Exception:
            # The archive maps bad data to ArchiveError itself; anything else is our failure, so answer the
            # retryable "out of resources" rather than telling the modality its data is wrong.
            LOG.exception("C-STORE %s from %s failed unexpectedly", ds_instance, _calling_aet(event))
            return OUT_OF_RESOURCES
        LOG.debug("C-STORE %s from %s stored", ds_instance, _calling_aet(event))
        return int(getattr(outcome, "status", SUCCESS))

    # -- C-FIND ----------------------------------------------------------------------------------------
    def on_find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        """One pending response per matching entity at the asked level; honours C-CANCEL."""
        model = FIND_MODELS.get(str(event.request.AffectedSOPClassUID), QueryModel.STUDY_ROOT)
        count = 0
        try:
            for match in self.archive.find(model, _identifier(event)):
                if event.is_cancelled:
                    LOG.info("C-FIND cancelled by %s after %d matches", _calling_aet(event), count)
                    yield CANCEL, None
                    return
                count += 1
                yield PENDING, match
        except ArchiveError as exc:
            LOG.error("C-FIND from %s refused: %s", _calling_aet(event), exc)
            yield exc.status, None
            return
        except Exception:
            LOG.exception("C-FIND from %s failed unexpectedly", _calling_aet(event))
            yield OUT_OF_RESOURCES, None
            return
        LOG.info("C-FIND (%s root) from %s: %d matches", model, _calling_aet(event), count)
        yield SUCCESS, None

    # -- C-GET / C-MOVE --------------------------------------------------------------------------------
    def on_get(self, event: Event) -> Iterator[Any]:
        """Number of sub-operations, then one (pending, dataset) per instance, sent on this association."""
        model = GET_MODELS.get(str(event.request.AffectedSOPClassUID), QueryModel.STUDY_ROOT)
        try:
            refs = self.archive.locate(model, _identifier(event))
        except Exception as exc:  # noqa: BLE001 - reported to the peer as the C-GET failure
            yield 1  # pynetdicom wants the count first; the failure below then ends the operation
            yield self._locate_failure(event, "C-GET", exc)
            return
        LOG.info("C-GET (%s root) from %s: %d instances", model, _calling_aet(event), len(refs))
        yield len(refs)
        yield from self._deliver(event, refs, lambda: event.assoc)

    def on_move(self, event: Event) -> Iterator[Any]:
        """Destination from ``[remotes]`` (unknown -> A801), then as C-GET over a new association."""
        model = MOVE_MODELS.get(str(event.request.AffectedSOPClassUID), QueryModel.STUDY_ROOT)
        destination = (event.move_destination or "").strip()
        remote = self.settings.remotes.get(destination)
        if remote is None:
            LOG.error("C-MOVE from %s: unknown move destination %r", _calling_aet(event), destination)
            yield None, None  # pynetdicom answers 0xA801
            return
        try:
            refs = self.archive.locate(model, _identifier(event))
            failure = None
        except Exception as exc:  # noqa: BLE001 - reported to the peer as the C-MOVE failure
            refs, failure = [], exc
        # pynetdicom opens the sub-association with these keyword arguments to AE.associate()
        options: dict[str, Any] = {}
        contexts = storage_contexts_for([(r.sop_class_uid, _served_syntax(r)) for r in refs])
        if contexts:
            options["contexts"] = contexts
        sub = SubAssociation()
        options["evt_handlers"] = [(evt.EVT_ACCEPTED, sub.on_accepted)]
        if self.settings.server.tcp_nodelay:
            options["evt_handlers"] += list(CONNECTION_HANDLERS)
        if remote.tls:  # DICOM TLS to this destination: (client SSLContext, server_hostname)
            options["tls_args"] = move_tls_args(self.settings.server, remote)
        yield remote.host, remote.port, options
        if failure is not None:
            yield 1
            yield self._locate_failure(event, "C-MOVE", failure)
            return
        LOG.info("C-MOVE (%s root) from %s to %s (%s:%d): %d instances", model, _calling_aet(event),
                 destination, remote.host, remote.port, len(refs))
        yield len(refs)
        yield from self._deliver(event, refs, lambda: sub.assoc)

    def _deliver(self, event: Event, refs: Sequence[InstanceRef],
                 store_assoc: Callable[[], Any]) -> Iterator[tuple[int, Dataset | None]]:
        """Pending (status, dataset) pairs, each dataset in a syntax ``store_assoc()`` accepted for it;
        pynetdicom counts outcomes and builds the final response (A702/B000 with the Failed SOP
        Instance UID List when sub-operations failed)."""
        if not refs:
            return
        for ref, result in self.archive.load(refs):
            if event.is_cancelled:
                LOG.info("retrieve cancelled by %s", _calling_aet(event))
                yield CANCEL, None
                return
            if not isinstance(result, Exception):
                assoc = store_assoc()
                try:
                    if assoc is None:
                        raise ArchiveError("no storage association", status=RETRIEVE_OUT_OF_RESOURCES)
                    result = for_peer(result, accepted_syntaxes(assoc, str(result.SOPClassUID)))
                except ArchiveError as exc:
                    result = exc
                except Exception as exc:
                    LOG.exception("retrieve: instance %s cannot be converted", _ref_uid(ref))
                    result = ArchiveError(f"{type(exc).__name__}: {exc}", status=CANNOT_UNDERSTAND)
            if isinstance(result, Exception):
                LOG.error("retrieve: instance %s not sent (%s); counted as failed", _ref_uid(ref), result)
                yield PENDING, _undeliverable(ref)
            else:
                yield PENDING, result

    def _locate_failure(self, event: Event, service: str, exc: Exception) -> tuple[int, Dataset]:
        """The final failure response for a retrieve whose identifier the archive could not resolve."""
        if isinstance(exc, ArchiveError):
            LOG.error("%s from %s refused: %s", service, _calling_aet(event), exc)
            status = RETRIEVE_OUT_OF_RESOURCES if exc.status == OUT_OF_RESOURCES else exc.status
        else:
            LOG.error("%s from %s failed unexpectedly", service, _calling_aet(event), exc_info=exc)
            status = RETRIEVE_OUT_OF_RESOURCES
        failed = Dataset()
        failed.FailedSOPInstanceUIDList = []
        return status, failed
