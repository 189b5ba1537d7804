"""Prove that every stored instance can still be served: metadata readable, pixel blob decodable.

This is the check an admin runs after changing ``models/`` or restoring a backup: it goes through the same
retrieve path as C-GET (so a pass means a viewer would get the instance), and additionally checks the pixels
against the image attributes (Rows x Columns x Samples x Bits Allocated x Frames, the same check ingest
makes) and that a lossless blob gives back exactly as many bytes as were received.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import select

from pacs_cae.archive import retrieve
from pacs_cae.archive.errors import ArchiveError
from pacs_cae.archive.service import Archive
from pacs_cae.dicom.integrity import pixel_data_problem
from pacs_cae.store.schema import Instance
from pacs_cae.vocabulary import StorageKind


@dataclass(frozen=True)
class _Ref:
    id: int
    sop_instance_uid: str
    storage: str
    codec_model_id: str | None
    original_pixel_bytes: int


@dataclass
class VerifyReport:
    """Counts by storage kind / model, and one line per instance that failed."""

    checked: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (SOP Instance UID, reason)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {
            "checked": sum(self.checked.values()),
            "by_storage": dict(self.checked),
            "failed": len(self.failures),
            "failures": [{"sop_instance_uid": uid, "reason": reason} for uid, reason in self.failures],
        }


def _refs(archive: Archive, chunk: int) -> Iterator[list[_Ref]]:
    last = 0
    while True:
        with archive.database.session(readonly=True) as session:
            rows = session.execute(
                select(Instance.id, Instance.sop_instance_uid, Instance.storage, Instance.codec_model_id,
                       Instance.original_pixel_bytes)
                .where(Instance.id > last).order_by(Instance.id).limit(chunk)
            ).all()
        if not rows:
            return
        last = rows[-1][0]
        yield [_Ref(*row) for row in rows]


def _pixel_length(ds: object) -> int:
    pixels = getattr(ds, "PixelData", None)
    return 0 if pixels is None else len(pixels)


def verify(archive: Archive, chunk: int = 64, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Decode every instance the archive holds; never raises for a bad instance, reports it."""
    report = VerifyReport()
    for refs in _refs(archive, chunk):
        for ref, result in retrieve.load(refs, database=archive.database, decoder=archive.codecs,
                                         lossy_uid=archive.settings.codec.lossy_uid, chunk_size=chunk):
            kind = ref.storage if ref.storage != StorageKind.CAE else f"cae:{ref.codec_model_id}"
            report.checked[kind] += 1
            if isinstance(result, ArchiveError):
                report.failures.append((ref.sop_instance_uid, str(result)))
            elif problem := pixel_data_problem(result):
                report.failures.append((ref.sop_instance_uid, problem))
            elif ref.storage == "lossless" and _pixel_length(result) != ref.original_pixel_bytes:
                report.failures.append(
                    (ref.sop_instance_uid,
                     f"lossless pixel data is {_pixel_length(result)} bytes, {ref.original_pixel_bytes} received")
                )
        if progress:
            progress(len(refs))
    return report


__all__ = ["VerifyReport", "verify"]
