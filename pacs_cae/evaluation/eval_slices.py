"""The slices an evaluation scores: integer pixels with their BitsStored/BitsAllocated, like DICOM MR.

* NIfTI volumes are float; each chosen axial slice is resampled so its longer side is ``size`` pixels
  (padded to ``size`` x ``size``; ``size=0`` keeps the volume's own grid) and quantised to unsigned
  ``bits``-bit integers with the *volume's* min and max (one scaling for the whole series, as a scanner's
  reconstruction would), so it looks like stored MR pixels.
* DICOM files and folders are used as stored: the decoded Pixel Data of each monochrome instance (every frame
  of a multi-frame one), with its own BitsStored and BitsAllocated, no resampling.
* Archived studies (:func:`archive_slices`) are read through the archive's own retrieve path, originals only:
  an instance the archive keeps as a lossy (CAE) copy is no reference for a codec's error, so it is skipped
  and reported, never scored.

In every case ``count`` evenly spaced non-empty slices are taken per volume/series.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pacs_cae.dicom.series import read_files, read_series
from pacs_cae.train.slices import axial_slices, fit_to, is_empty
from pacs_cae.train.sources import load_nifti
from pacs_cae.vocabulary import QueryModel, StorageKind

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from pacs_cae.config import Settings

DEFAULT_BITS = 12
DEFAULT_SIZE = 512


@dataclass(frozen=True)
class EvalSlice:
    """One slice to score: integer pixels plus where they came from."""

    source: str
    index: int  # position among the chosen slices of its volume/series
    pixels: np.ndarray  # 2-D integer array
    bits_stored: int
    bits_allocated: int
    sop_instance_uid: str = ""  # DICOM sources: the instance the slice is (a frame of)


def _evenly(items: list, count: int | None) -> list:
    if count is None or len(items) <= count:
        return items
    return [items[round(i)] for i in np.linspace(0, len(items) - 1, count)]


def nifti_slices(path: Path, count: int | None, size: int, bits: int) -> list[EvalSlice]:
    """Axial slices of a NIfTI volume, resampled to size x size and quantised to ``bits`` unsigned bits."""
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be 2..16, got {bits}")
    volume = load_nifti(path)
    lo, hi = float(volume.data.min()), float(volume.data.max())
    span = hi - lo if hi > lo else 1.0
    top = (1 << bits) - 1
    dtype = np.uint8 if bits <= 8 else np.uint16
    out = []
    for i, s in enumerate(axial_slices(volume, count)):
        resampled = fit_to(s, size) if size else s
        q = np.clip(np.rint((resampled - lo) / span * top), 0, top).astype(dtype)
        out.append(EvalSlice(f"{path}", i, q, bits, np.dtype(dtype).itemsize * 8))
    return out


@dataclass(frozen=True)
class Skipped:
    """An instance that was not scored, and why (reported in the evaluation output)."""

    sop_instance_uid: str
    reason: str

    def to_dict(self) -> dict:
        return {"sop_instance_uid": self.sop_instance_uid, "reason": self.reason}


def dataset_slices(
    datasets: Iterable[tuple[str, Dataset]], count: int | None, skipped: list[Skipped] | None = None
) -> list[EvalSlice]:
    """Slices of ``(label, dataset)`` pairs, grouped by series (label#SeriesInstanceUID), ``count`` per series.

    Instances without decodable monochrome pixels are left out (and added to ``skipped`` when given); frames
    of multi-frame instances are slices of their series, in frame order (:mod:`pacs_cae.dicom.series`).
    """
    def skip(uid: str, reason: str) -> None:
        if skipped is not None:
            skipped.append(Skipped(uid, reason))

    out = []
    for (label, series_uid), frames in read_series(datasets, skip).items():
        kept = [f for f in frames if not is_empty(f.pixels.astype(np.float32))]
        for i, f in enumerate(_evenly(kept, count)):
            out.append(EvalSlice(f"{label}#{series_uid}", i, f.pixels, f.bits_stored, f.bits_allocated,
                                 f.sop_instance_uid))
    return out


def dicom_slices(folder: Path, count: int | None) -> list[EvalSlice]:
    """Stored pixels of every monochrome series under ``folder`` (or of one DICOM file), ``count`` per series."""
    return dataset_slices(((str(folder), ds) for ds in read_files(Path(folder))), count)


def archive_slices(settings: Settings, study_uids: Sequence[str], count: int | None) -> tuple[
    list[EvalSlice], list[Skipped]
]:
    """The original pixels of the studies' instances, read through the archive (locate + load), and the
    instances left out with the reason: lossy (CAE) copies, instances without pixels, unreadable ones.

    The archive opens read-only in effect: its schema must be current (nothing is created or upgraded) and its
    codec model is not loaded, since only losslessly stored instances are read. Raises ``ValueError`` for a
    study the archive does not hold or a SQLite archive file that does not exist.
    """
    from pydicom.dataset import Dataset as _Dataset

    from pacs_cae.archive.service import Archive, ArchiveCodecs
    from pacs_cae.codec import CodecRegistry
    from pacs_cae.store.db import Database

    path = settings.database.sqlite_path()
    if path is not None and not path.exists():  # never create (or upgrade) an archive just to read it
        raise ValueError(f"no archive database at {path} (database.url = {settings.database.url})")
    database = Database(settings.database.url)
    try:
        database.check_current()
    except Exception:
        database.dispose()
        raise
    pairs: list[tuple[str, Dataset]] = []
    skipped: list[Skipped] = []
    codecs = ArchiveCodecs(CodecRegistry(settings.codec.models_dir, "cpu"), None)  # nothing to decode: originals
    with Archive(settings, database, codecs) as archive:
        for uid in study_uids:
            identifier = _Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = uid
            refs = archive.locate(QueryModel.STUDY_ROOT, identifier)
            if not refs:
                raise ValueError(f"study {uid} is not in the archive")
            originals = []
            for ref in refs:
                if ref.storage == StorageKind.CAE:
                    skipped.append(Skipped(ref.sop_instance_uid, LOSSY_COPY_REASON))
                elif ref.storage == "none":
                    skipped.append(Skipped(ref.sop_instance_uid, "no pixel data"))
                else:
                    originals.append(ref)
            for ref, ds in archive.load(originals):
                if isinstance(ds, Exception):
                    skipped.append(Skipped(ref.sop_instance_uid, f"cannot be read: {ds}"))
                else:
                    pairs.append((f"study:{uid}", ds))
    return dataset_slices(pairs, count, skipped), skipped


#: Why an archived lossy copy is not scored.
LOSSY_COPY_REASON = (
    "stored as a lossy (CAE) copy: the original pixels are gone, so it is no reference for a codec's error"
)


def load_eval_slices(
    paths: list[Path], count: int | None = 16, size: int = DEFAULT_SIZE, bits: int = DEFAULT_BITS
) -> list[EvalSlice]:
    """Slices from NIfTI files, DICOM files and DICOM folders, in argument order."""
    out: list[EvalSlice] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ValueError(f"{p}: no such file or folder")
        if p.name.endswith((".nii", ".nii.gz")):
            out += nifti_slices(p, count, size, bits)
            continue
        found = dicom_slices(p, count)
        if not found:
            kind = "folder" if p.is_dir() else "file"
            raise ValueError(f"{p}: not a NIfTI file, and no monochrome DICOM image in this {kind}")
        out += found
    return out
