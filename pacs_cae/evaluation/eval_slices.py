"""The slices an evaluation scores: integer pixels with their BitsStored/BitsAllocated, like DICOM MR.

* NIfTI volumes are float; each chosen axial slice is resampled so its longer side is ``size`` pixels
  (padded to ``size`` x ``size``; ``size=0`` keeps the volume's own grid) and quantised to unsigned
  ``bits``-bit integers with the *volume's* min and max (one scaling for the whole series, as a scanner's
  reconstruction would), so it looks like stored MR pixels.
* DICOM folders are used as stored: the decoded Pixel Data of each single-frame monochrome instance, with its
  own BitsStored and BitsAllocated, no resampling.

In both cases ``count`` evenly spaced non-empty slices are taken per volume/series.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pacs_cae.train.slices import axial_slices, fit_to, is_empty
from pacs_cae.train.sources import load_nifti

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


def _evenly(items: list, count: int | None) -> list:
    if count is None or len(items) <= count:
        return items
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, count)]


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


def dicom_slices(folder: Path, count: int | None) -> list[EvalSlice]:
    """Stored pixels of every single-frame monochrome series under ``folder``, ``count`` per series."""
    import pydicom

    from pacs_cae.dicom.pixels import extract_frames

    series: dict[str, list[tuple[float, np.ndarray, int, int]]] = defaultdict(list)
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
            pix = extract_frames(ds)
        except Exception:  # not DICOM / no decodable monochrome pixels: not evaluation data
            continue
        if len(pix.frames) != 1:
            continue
        position = getattr(ds, "ImagePositionPatient", None)
        order = float(position[2]) if position else float(getattr(ds, "InstanceNumber", 0) or 0)
        uid = str(getattr(ds, "SeriesInstanceUID", path.parent))
        series[uid].append((order, pix.frames[0], pix.bits_stored, pix.bits_allocated))
    out = []
    for uid, items in series.items():
        items.sort(key=lambda t: t[0])
        kept = [t for t in items if not is_empty(t[1].astype(np.float32))]
        for i, (_, frame, stored, allocated) in enumerate(_evenly(kept, count)):
            out.append(EvalSlice(f"{folder}#{uid}", i, frame, stored, allocated))
    return out


def load_eval_slices(
    paths: list[Path], count: int | None = 16, size: int = DEFAULT_SIZE, bits: int = DEFAULT_BITS
) -> list[EvalSlice]:
    """Slices from NIfTI files and DICOM folders, in argument order."""
    out: list[EvalSlice] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = dicom_slices(p, count)
            if not found:
                raise ValueError(f"{p}: no single-frame monochrome DICOM images found")
            out += found
        elif p.name.endswith((".nii", ".nii.gz")):
            out += nifti_slices(p, count, size, bits)
        else:
            raise ValueError(f"{p}: not a NIfTI file or a folder of DICOM files")
    return out
