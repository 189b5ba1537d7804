"""The :class:`Archive` facade: the only object the network layer and the CLI talk to.

It owns nothing but wiring: settings, one :class:`~pacs_cae.store.db.Database` and one
:class:`ArchiveCodecs`. Every method is one use case (ingest, query, retrieve, stats) in its own module,
and is safe to call from many threads at once (one database session per call, one shared batching codec).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy.exc import SQLAlchemyError

from pacs_cae.archive import query, stats
from pacs_cae.archive import retrieve as _retrieve
from pacs_cae.archive.compression import RunReport
from pacs_cae.archive.compression_rules import NO_MODEL
from pacs_cae.archive.errors import ArchiveError, OutOfResources
from pacs_cae.archive.ingest import EncodedDataSet, StoreOutcome, ingest
from pacs_cae.archive.query import InstanceRef
from pacs_cae.archive.retrieve import RefT
from pacs_cae.codec import BatchingCodec, CodecError, CodecRegistry
from pacs_cae.codec.base import SliceCodec
from pacs_cae.codec.device import forward_batch
from pacs_cae.config import CodecSettings, Settings
from pacs_cae.store.db import Database, ensure_schema
from pacs_cae.vocabulary import QueryModel

if TYPE_CHECKING:
    from pacs_cae.archive.verify import VerifyReport

LOG = logging.getLogger(__name__)



def check_quality(model: SliceCodec, quality: int | None, key: str = "codec.quality") -> None:
    """Refuse, at start-up, a ``codec.quality`` (or a rule's ``key``) the model cannot honour."""
    if quality is None:
        return
    if model.qualities is None:
        raise CodecError(f"{key} = {quality}, but model {model.model_id!r} has a single operating point "
                         f"(unset {key}, or choose a variable-rate model such as mshp-v1)")
    if not 1 <= quality <= model.qualities:
        raise CodecError(f"{key} = {quality}, but model {model.model_id!r} has qualities "
                         f"1..{model.qualities}")


def check_rules(settings: Settings, codecs: ArchiveCodecs) -> None:
    """Refuse, at start-up, a compression rule whose model is missing or cannot honour its ``quality``
    (else its jobs would only fail later, in a worker's log)."""
    for rule in settings.compression.effective_rules(settings.codec):
        if not rule.compress or (rule.model or settings.codec.model).strip().lower() in NO_MODEL:
            continue
        encoder = codecs.encoder_for(rule.model)  # loads the rule's model: UnknownModelError if absent
        if encoder is not None and rule.quality is not None:
            check_quality(encoder, rule.quality, key=f"compression.rules.{rule.name}.quality")


class ArchiveCodecs:
    """The codecs an archive uses.

    ``encoder`` is the configured model behind one :class:`BatchingCodec` (``None``: everything is stored
    losslessly); ``registry`` decodes blobs of any model the archive still references. The batcher is the
    registry's codec for the configured model, so its blobs are decoded in the batches the workers use too.
    """

    def __init__(self, registry: CodecRegistry, encoder: SliceCodec | None = None) -> None:
        self.registry = registry
        self.encoder = encoder
        self._replaced = registry.use(encoder) if encoder is not None else None

    @classmethod
    def from_settings(cls, codec: CodecSettings, *, decode_only: bool = False) -> ArchiveCodecs:
        """Load ``codec.model`` (raises ``UnknownModelError`` if it is missing) and start its batcher.

        ``decode_only``: no encoder at all (``verify``): blobs name their model, loaded when first decoded.
        """
        registry = CodecRegistry(codec.models_dir, codec.device, codec.brotli_quality, max_batch=codec.batch_size)
        if decode_only:
            return cls(registry, None)
        if codec.model.strip().lower() in NO_MODEL:
            LOG.warning("codec.model is %r: every instance is stored losslessly", codec.model)
            return cls(registry, None)
        model = registry.get(codec.model)
        check_quality(model, codec.quality)
        LOG.info("codec %s (sha256 %s) on %s", model.model_id, model.weights_sha256[:12], model.device)
        return cls(registry, BatchingCodec(model, max_batch=forward_batch(codec.batch_size, model.device), max_wait_ms=codec.batch_wait_ms))

    @property
    def model_id(self) -> str | None:
        """The model new slices are encoded with (None: lossless only)."""
        return None if self.encoder is None else self.encoder.model_id

    def encoder_for(self, model: str) -> SliceCodec | None:
        """The encoder of a compression rule's model: "" (or the configured one) is :attr:`encoder`."""
        if not model:
            return self.encoder
        return None if model.strip().lower() in NO_MODEL else self.registry.get(model)

    def missing_reason(self, model: str) -> str | None:
        """Nothing more to say than "no model loaded" (the worker's floor check adds its own reasons)."""
        return None

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        """Decode CAE blobs of any model in input order (each with the model it names)."""
        return self.registry.decode(blobs)

    def close(self) -> None:
        """Stop the batching worker (finishing queued work); the registry decodes without it again."""
        if self.encoder is not None:
            self.registry.release(self.encoder, self._replaced)
        if isinstance(self.encoder, BatchingCodec):
            self.encoder.close()


class Archive:
    """``store / find / locate / load / stats`` over one database and one set of codecs."""

    def __init__(self, settings: Settings, database: Database, codecs: ArchiveCodecs) -> None:
        self.settings = settings
        self.database = database
        self.codecs = codecs

    @classmethod
    def open(cls, settings: Settings, *, decode_only: bool = False) -> Archive:
        """Connect (upgrading an embedded SQLite, refusing an out-of-date server), load the codec.

        ``decode_only``: for read-only checks; the configured model is not loaded (it may be missing).
        """
        database = ensure_schema(settings)
        try:
            codecs = ArchiveCodecs.from_settings(settings.codec, decode_only=decode_only)
        except Exception:
            database.dispose()
            raise
        if not decode_only and settings.compression.enabled:
            try:
                check_rules(settings, codecs)
            except Exception:
                codecs.close()
                database.dispose()
                raise
        return cls(settings, database, codecs)

    def close(self) -> None:
        """Finish queued codec work and close database connections."""
        self.codecs.close()
        self.database.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- use cases -------------------------------------------------------------------------------------
    def store(self, ds: Dataset, calling_aet: str = "", *, affected_sop_class: str | None = None,
              affected_sop_instance: str | None = None, encoded: EncodedDataSet | None = None) -> StoreOutcome:
        """Archive one instance losslessly (and its compression job); returns after commit.

        Raises :class:`ArchiveError` with the status. The learned codec runs later, in a worker. ``encoded``
        (the bytes as received) lets ingest refuse a stream that ends inside an element.
        """
        return ingest(ds, settings=self.settings, database=self.database, calling_aet=calling_aet,
                      affected_sop_class=affected_sop_class, affected_sop_instance=affected_sop_instance,
                      encoded=encoded)

    def compress_pending(self, *, ignore_delay: bool = True) -> RunReport:
        """Run one compression worker in this thread until no due job is left (tests, ``worker --drain``)."""
        import threading

        from pacs_cae.archive.workers import CompressionWorker

        return CompressionWorker(self.database, self.settings, self.codecs).run(
            threading.Event(), drain=True, ignore_delay=ignore_delay)

    def find(self, query_model: QueryModel, identifier: Dataset) -> Iterator[Dataset]:
        """C-FIND matches at the identifier's Query/Retrieve Level (Patient or Study Root).

        A generator holding one read-only session while the caller consumes it; a bad identifier raises
        ``QueryError`` on the first ``next()``, a database failure :class:`OutOfResources`.
        """
        try:
            with self.database.session(readonly=True) as session:
                yield from query.find(session, query_model, identifier, lossy_uid=self.settings.codec.lossy_uid,
                                      retrieve_aet=self.settings.server.ae_title)
        except SQLAlchemyError as exc:
            LOG.error("C-FIND failed, database error: %s", exc)
            raise OutOfResources(f"database error: {type(exc).__name__}") from exc

    def locate(self, query_model: QueryModel, identifier: Dataset) -> list[InstanceRef]:
        """The instances a C-GET/C-MOVE with this identifier sends (an original or a derived UID works)."""
        try:
            with self.database.session(readonly=True) as session:
                return query.locate(session, query_model, identifier, lossy_uid=self.settings.codec.lossy_uid)
        except SQLAlchemyError as exc:
            LOG.error("retrieve lookup failed, database error: %s", exc)
            raise OutOfResources(f"database error: {type(exc).__name__}") from exc

    def load(self, refs: Sequence[RefT]) -> Iterator[tuple[RefT, Dataset | ArchiveError]]:
        """The served datasets for ``refs`` (decoded in batches); failures come back as ArchiveError."""
        return _retrieve.load(refs, database=self.database, decoder=self.codecs,
                              lossy_uid=self.settings.codec.lossy_uid,
                              # the producer decodes chunk k+1 while chunk k is sent (a longer chunk only
                              # makes the sender wait for more decodes; a chunk of one slice hands over per
                              # slice, slower on the CPU where a forward takes one slice)
                              chunk_size=self.settings.codec.chunk_slices)

    def stats(self) -> dict[str, Any]:
        """Counts and original/stored bytes, overall and per codec model and modality."""
        with self.database.session(readonly=True) as session:
            return stats.collect(session)

    def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Decode every stored instance through the retrieve path (every model still referenced must load)."""
        from pacs_cae.archive.verify import verify

        return verify(self, progress=progress)


__all__ = ["NO_MODEL", "Archive", "ArchiveCodecs"]
