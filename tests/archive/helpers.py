"""Small helpers shared by the archive tests."""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from pacs_cae.archive.service import Archive
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
    [(ref, result)] = list(archive.load(refs_for(archive, sop_instance_uid)))
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
