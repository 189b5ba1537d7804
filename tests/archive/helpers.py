"""Small helpers shared by the archive tests."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from pacs_cae.archive.service import Archive
from pacs_cae.codec.base import BlobDecoder
from pacs_cae.dicom.rebuild import served_sop_instance_uid
from pacs_cae.store.schema import Instance

TEST_MODEL = "cae-paper-init"  # the shipped untrained checkpoint
ZERO_MODEL = "cae-zero"  # every weight 0: the decoder outputs 0.5 everywhere, a deliberately bad model


@dataclass(frozen=True)
class Ref:
    """A minimal instance reference (what ``Archive.load`` needs: the row id)."""

    id: int
    sop_instance_uid: str


def refs_for(archive: Archive, *sop_instance_uids: str) -> list[Ref]:
    """References to stored instances by their received SOP Instance UID, in the order given."""
    with archive.database.session(readonly=True) as session:
        rows = session.execute(select(Instance.id, Instance.sop_instance_uid)
                               .where(Instance.sop_instance_uid.in_(sop_instance_uids))).all()
    by_uid = {uid: pk for pk, uid in rows}
    return [Ref(by_uid[u], u) for u in sop_instance_uids if u in by_uid]


def load_one(archive: Archive, sop_instance_uid: str) -> Dataset:
    """The served dataset for one stored instance (fails the test on an ArchiveError)."""
    [(_ref, result)] = list(archive.load(refs_for(archive, sop_instance_uid)))
    assert isinstance(result, Dataset), result
    return result


def part10(ds: Dataset) -> bytes:
    """``ds`` as a DICOM Part 10 file, the way C-GET receivers and export write it."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def reread(ds: Dataset) -> Dataset:
    """``ds`` written as a Part 10 file and read back (what a receiver sees)."""
    return dcmread(io.BytesIO(part10(ds)))


@dataclass(frozen=True)
class Stored:
    """How an instance is stored once the compression backlog was drained (C-STORE fast path + worker)."""

    sop_instance_uid: str
    result: str  # what the store answered: "stored" | "replaced" | "kept-first"
    storage: str
    fallback_reason: str | None
    codec_model_id: str | None
    original_pixel_bytes: int
    stored_pixel_bytes: int
    served_sop_instance_uid: str


def store_and_compress(archive: Archive, *datasets: Dataset, **store_kwargs: object) -> list[Stored]:
    """Store ``datasets``, run a worker until no due job is left, and read back how each is stored."""
    outcomes = [archive.store(ds, **store_kwargs) for ds in datasets]  # type: ignore[arg-type]
    archive.compress_pending()
    uids = [o.sop_instance_uid for o in outcomes]
    with archive.database.session(readonly=True) as session:
        rows = {r.sop_instance_uid: r for r in session.scalars(select(Instance)
                                                               .where(Instance.sop_instance_uid.in_(uids)))}
    out = []
    for outcome in outcomes:
        row = rows[outcome.sop_instance_uid]
        served = (served_sop_instance_uid(row.sop_instance_uid, row.codec_model_id, archive.settings.codec.lossy_uid)
                  if row.storage == "cae" and row.codec_model_id else row.sop_instance_uid)
        out.append(Stored(row.sop_instance_uid, outcome.result, row.storage, row.fallback_reason,
                          row.codec_model_id, row.original_pixel_bytes, row.stored_pixel_bytes, served))
    return out


class RecordingDecoder:
    """The archive's decoder, recording which thread decodes how many blobs."""

    def __init__(self, inner: BlobDecoder) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int]] = []
        self.second_call = threading.Event()
        self.third_call = threading.Event()

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        self.calls.append((threading.current_thread().name, len(blobs)))
        if len(self.calls) >= 2:
            self.second_call.set()
        if len(self.calls) >= 3:
            self.third_call.set()
        return self.inner.decode(blobs)
