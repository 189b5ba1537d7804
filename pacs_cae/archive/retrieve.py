"""Load located instances as the datasets C-GET / C-MOVE / export deliver, decoding in batches.

Instances are read from the store in chunks; the CAE blobs of a chunk go to the codec in one call (the
batching worker merges them with other associations' work), and so do the learned-codec frames of its
lossless blobs (the δ = 0 tier: exact streams, still checked by the blob's CRC); then each instance is rebuilt by
:mod:`pacs_cae.dicom.rebuild`. A producer thread reads and decodes the next chunks (and rebuilds their
losslessly stored instances) while the current one is rebuilt and sent. All
chunks are read from one snapshot of the database, so an answer never mixes a series' originals with its
lossy copies. A failure of one instance (a damaged blob, a model that is missing) is returned in its place
as an :class:`ArchiveError`, so a retrieve can count it as a failed sub-operation and go on with the rest.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pacs_cae.archive.errors import ArchiveError, OutOfResources
from pacs_cae.codec.base import BlobDecoder
from pacs_cae.codec.container import read_header
from pacs_cae.codec.lossless import LearnedDecoder, decode_lossless, learned_streams
from pacs_cae.dicom.metadata import decode_metadata
from pacs_cae.dicom.rebuild import LossySource, rebuild_lossless, rebuild_lossy
from pacs_cae.dicom.transcode import TranscodeError, choose_syntax, transcode
from pacs_cae.store.db import Database
from pacs_cae.store.repository import StoredInstance, load_instance_rows
from pacs_cae.vocabulary import LossyUidPolicy, StorageKind

LOG = logging.getLogger(__name__)

#: Chunks read and decoded ahead of the one being rebuilt and sent: the codec goes on with the next chunk
#: meanwhile, and the one after waits decoded.
PREFETCH_CHUNKS = 2

#: Status carried by a per-instance failure (PS3.4 C.4.3.1.4 "unable to process" range).
STATUS_UNABLE_TO_LOAD = 0xC001
STATUS_GONE = 0xC002
STATUS_NO_SYNTAX = 0xC003


class StoredRef(Protocol):
    """What names an instance row: an ``InstanceRef`` (query.locate), verify's references."""

    @property
    def id(self) -> int: ...


RefT = TypeVar("RefT", bound=StoredRef)


def _decode_all(decoder: BlobDecoder | None, rows: list[StoredInstance]) -> dict[int, np.ndarray | Exception]:
    """Decoded slices by row id; one batch, or one by one when the batch fails, to isolate the culprit."""
    out: dict[int, np.ndarray | Exception] = {}
    if not rows:
        return out
    if decoder is None:
        error = ArchiveError("no codec available to decode CAE blobs", status=STATUS_UNABLE_TO_LOAD)
        return {r.id: error for r in rows}
    try:
        for row, array in zip(rows, decoder.decode([r.pixel_blob or b"" for r in rows])):
            out[row.id] = array
        return out
    except Exception:  # noqa: BLE001, S110 - retried per instance below
        pass
    for row in rows:
        try:
            out[row.id] = decoder.decode([row.pixel_blob or b""])[0]
        except Exception as exc:  # noqa: BLE001 - reported for this instance only
            out[row.id] = exc
    return out


def _learned_decoders(decoder: BlobDecoder | None, rows: list[StoredInstance]) -> dict[int, LearnedDecoder]:
    """For lossless blobs holding learned-codec frames: decoders that hand back those frames, decoded for all
    of ``rows`` in one codec call. Empty when there are none or the batch fails: each blob then decodes its
    own frames (:func:`rebuild`), so a damaged stream fails only its instance."""
    if decoder is None:
        return {}
    streams: dict[int, list[bytes]] = {}
    for row in rows:
        try:
            found = learned_streams(row.pixel_blob) if row.pixel_blob is not None else []
        except Exception:  # noqa: BLE001 - a damaged blob: its own decode reports it
            found = []
        if found:
            streams[row.id] = found
    if not streams:
        return {}
    try:
        frames = list(decoder.decode([s for found in streams.values() for s in found]))
    except Exception:  # noqa: BLE001 - decoded one blob at a time instead
        return {}
    out: dict[int, LearnedDecoder] = {}
    at = 0
    for pk, found in streams.items():
        out[pk] = _replay(found, frames[at:at + len(found)], decoder)
        at += len(found)
    return out


def _replay(streams: list[bytes], frames: list[np.ndarray], decoder: BlobDecoder) -> LearnedDecoder:
    """A :data:`LearnedDecoder` giving ``frames`` for exactly ``streams`` (anything else is decoded)."""
    def decode(asked: Sequence[bytes]) -> Sequence[np.ndarray]:
        return frames if [bytes(a) for a in asked] == streams else decoder.decode(asked)
    return decode


def rebuild(row: StoredInstance, decoded: np.ndarray | Exception | None, lossy_uid: str,
            learned: LearnedDecoder | None = None) -> Dataset:
    """The served dataset for one stored instance (``learned``: decodes a lossless blob's learned frames)."""
    stored = decode_metadata(row.metadata_blob)
    if row.storage != StorageKind.CAE:
        pixels = decode_lossless(row.pixel_blob, learned) if row.pixel_blob is not None else None
        return rebuild_lossless(stored, pixels)
    if isinstance(decoded, Exception):
        raise decoded
    if decoded is None or row.pixel_blob is None:
        raise ArchiveError("CAE instance has no pixel blob", status=STATUS_UNABLE_TO_LOAD)
    header = read_header(row.pixel_blob)
    source = LossySource(model_id=row.codec_model_id or header.model_id, blob_bytes=len(row.pixel_blob),
                         weights_sha256=header.weights_sha256, lossy_uid=lossy_uid,
                         received_syntax=str(stored.transfer_syntax),
                         received_pixel_bytes=row.original_pixel_bytes,
                         max_abs_error=header.max_abs_error,
                         derived_uid=row.derived_sop_instance_uid)
    return rebuild_lossy(stored, decoded, source)


def for_peer(ds: Dataset, accepted: Sequence[str]) -> Dataset:
    """``ds`` in the syntax it is sent in to a peer that accepted ``accepted`` for its SOP class.

    The stored syntax when accepted (nothing decoded), else uncompressed, else a lossless compressed syntax
    the peer accepted (:mod:`pacs_cae.dicom.transcode`); ArchiveError when none can carry it.
    """
    stored = str(ds.file_meta.TransferSyntaxUID)
    target = choose_syntax(stored, accepted, "PixelData" in ds)
    if target is None:
        offered = ", ".join(sorted(accepted)) or "none"
        raise ArchiveError(f"stored as {stored}; the peer accepted no syntax that can carry it for SOP class "
                           f"{ds.get('SOPClassUID', '?')} ({offered})", status=STATUS_NO_SYNTAX)
    try:
        out = transcode(ds, target)
    except TranscodeError as exc:
        raise ArchiveError(str(exc), status=STATUS_UNABLE_TO_LOAD) from exc
    if target != stored:
        LOG.debug("retrieve: %s transcoded %s -> %s", ds.get("SOPInstanceUID", "?"), stored, target)
    return out


def load(refs: Sequence[RefT], *, database: Database, decoder: BlobDecoder | None,
         lossy_uid: str = LossyUidPolicy.DERIVE, chunk_size: int = 32,
         first_chunk: int | None = None) -> Iterator[tuple[RefT, Dataset | ArchiveError]]:
    """Yield ``(ref, dataset)`` or ``(ref, ArchiveError)`` for every ref, in order.

    Chunks are read and decoded (one codec call each) by a producer thread up to :data:`PREFETCH_CHUNKS`
    ahead of the consumer, which rebuilds their CAE instances and sends them, so the next batch decodes
    while the caller (pynetdicom) rebuilds and sends the current one. The first chunk
    is ``first_chunk`` long (default: ``chunk_size``): a short one gets the first instance out sooner.
    Every chunk is read from one snapshot (:class:`_Snapshot`): a series a worker compresses meanwhile comes
    back all original or all lossy, never mixed.
    """
    refs = list(refs)
    size = max(1, chunk_size)
    first = max(1, min(first_chunk or size, size))
    chunks = [refs[:first]] + [refs[i:i + size] for i in range(first, len(refs), size)] if refs else []
    snapshot = _Snapshot(database)
    learned = decoder.decode if decoder else None
    if len(chunks) <= 1:  # nothing to overlap with: no thread
        try:
            for chunk in chunks:
                yield from _rebuild_chunk(_read_chunk(chunk, snapshot, decoder, lossy_uid), lossy_uid, learned)
        finally:
            snapshot.close()
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieve-decode") as producer:
        try:
            ahead = deque(producer.submit(_read_chunk, chunk, snapshot, decoder, lossy_uid)
                          for chunk in chunks[:PREFETCH_CHUNKS])
            following = deque(chunks[PREFETCH_CHUNKS:])
            while ahead:
                ready = ahead.popleft().result()
                if following:
                    ahead.append(producer.submit(_read_chunk, following.popleft(), snapshot, decoder, lossy_uid))
                yield from _rebuild_chunk(ready, lossy_uid, learned)
        finally:
            # closed on the thread that opened it, after the chunk in flight; a consumer that stops early
            # (C-CANCEL, a closed association) leaves at most that one chunk, which the executor finishes
            for waiting in ahead:
                waiting.cancel()  # not started yet: never read
            producer.submit(snapshot.close)


class _Snapshot:
    """One read-only unit of work for every chunk of a retrieve, opened on first use.

    Used by one thread at a time (the producer, or the caller when there is no producer). After a database
    error every later chunk fails too: reading them from a fresh snapshot could mix states of a series.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._stack = ExitStack()
        self._session: Session | None = None
        self._failed: OutOfResources | None = None

    def rows(self, ids: list[int]) -> list[StoredInstance]:
        if self._failed is not None:
            raise self._failed
        try:
            if self._session is None:
                self._session = self._stack.enter_context(self._database.session(readonly=True))
            return load_instance_rows(self._session, ids)
        except SQLAlchemyError as exc:
            LOG.error("retrieve: database error loading %d instances: %s", len(ids), exc)
            self._failed = OutOfResources(f"database error: {type(exc).__name__}")
            self.close()
            raise self._failed from exc

    def close(self) -> None:
        self._session = None
        self._stack.close()


Loaded = tuple[RefT, Dataset | ArchiveError]


@dataclass
class _ReadChunk(Generic[RefT]):
    """A chunk read from the snapshot: its rows, its CAE blobs decoded, its lossless instances rebuilt (or
    the error that stopped the read)."""

    refs: list[RefT]
    rows: dict[int, StoredInstance]
    decoded: dict[int, np.ndarray | Exception]
    built: dict[int, Loaded[RefT]]
    error: OutOfResources | None = None


def _read_chunk(chunk: list[RefT], snapshot: _Snapshot, decoder: BlobDecoder | None,
                lossy_uid: str) -> _ReadChunk[RefT]:
    """The producer thread's part of a chunk: its rows from the retrieve's snapshot, one batched decode of its
    CAE blobs and one of its lossless blobs' learned frames, and its lossless instances rebuilt (their
    JPEG-LS / JPEG 2000 decoding). CAE instances are
    rebuilt by the caller (:func:`_rebuild_chunk`), so the codec goes on with the next chunk meanwhile."""
    try:
        rows = {row.id: row for row in snapshot.rows([r.id for r in chunk])}
    except OutOfResources as error:
        return _ReadChunk(chunk, {}, {}, {}, error)
    decoded = _decode_all(decoder, [r for r in rows.values() if r.storage == StorageKind.CAE])
    learned = decoder.decode if decoder else None
    lossless = [ref for ref in chunk if ref.id in rows and rows[ref.id].storage != StorageKind.CAE]
    batched = _learned_decoders(decoder, [rows[ref.id] for ref in lossless])
    # JPEG-LS / JPEG 2000 decoding releases the GIL: a chunk's lossless frames decode on every core
    many = sum(1 for ref in lossless if rows[ref.id].pixel_blob is not None) > 1
    built = (_REBUILDERS.map if many else map)(
        lambda ref: _rebuild_one(ref, rows, decoded, lossy_uid, batched.get(ref.id, learned)), lossless)
    return _ReadChunk(chunk, rows, decoded, {ref.id: item for ref, item in zip(lossless, built)})


def _rebuild_chunk(read: _ReadChunk[RefT], lossy_uid: str, learned: LearnedDecoder | None) -> list[Loaded[RefT]]:
    """The served datasets of a read chunk, in order (the caller's thread, while the next chunk decodes)."""
    if read.error is not None:
        return [(ref, read.error) for ref in read.refs]
    return [read.built.get(ref.id) or _rebuild_one(ref, read.rows, read.decoded, lossy_uid, learned)
            for ref in read.refs]


def _rebuild_one(ref: RefT, rows: dict[int, StoredInstance], decoded: dict[int, np.ndarray | Exception],
                 lossy_uid: str, learned: LearnedDecoder | None) -> Loaded[RefT]:
    """One served dataset, or the error that takes its place."""
    row = rows.get(ref.id)
    if row is None:
        return ref, ArchiveError("instance is no longer in the archive", status=STATUS_GONE)
    try:
        return ref, rebuild(row, decoded.get(row.id), lossy_uid, learned)
    except ArchiveError as exc:
        return ref, exc
    except Exception as exc:  # noqa: BLE001 - damaged blob, missing model, ...
        LOG.error("retrieve: instance %s cannot be rebuilt: %s", row.sop_instance_uid, exc)
        return ref, ArchiveError(f"{type(exc).__name__}: {exc}", status=STATUS_UNABLE_TO_LOAD)


#: Threads that rebuild the instances of a chunk side by side (shared by every retrieve of the process).
_REBUILDERS = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="retrieve-rebuild")


__all__ = ["StoredRef", "for_peer", "load", "rebuild"]
