"""Monochrome DICOM files read as series of frames: the one reader behind training and evaluation sources.

Frames come from :func:`pacs_cae.dicom.pixels.extract_frames` (the same pinned decoder as the codec's input),
grouped by label and Series Instance UID and ordered by slice position (Image Position Patient z, else
Instance Number), then by frame. Files that are not DICOM, or have no decodable monochrome pixels, are left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pacs_cae.dicom.pixels import extract_frames


@dataclass(frozen=True)
class SeriesFrame:
    """One frame of a series, with the attributes its users need."""

    sop_instance_uid: str
    position: float  # Image Position Patient z, else Instance Number
    frame: int  # index within its instance
    frames_in_instance: int
    pixels: np.ndarray  # stored integers, 2-D
    bits_stored: int
    bits_allocated: int
    spacing: tuple[float, float]  # Pixel Spacing (row, column) in mm; (1, 1) when absent


def read_files(path: Path) -> Iterator[Dataset]:
    """The DICOM data sets of one file, or of every file below a folder (sorted); other files are skipped."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        try:
            yield dcmread(file)
        except (InvalidDicomError, OSError, EOFError, ValueError):  # not DICOM
            continue


def read_series(datasets: Iterable[tuple[str, Dataset]], on_skip: Callable[[str, str], None] | None = None,
                ) -> dict[tuple[str, str], list[SeriesFrame]]:
    """Frames of ``(label, dataset)`` pairs by ``(label, SeriesInstanceUID)``, in slice order.

    Instances without decodable monochrome pixels are left out; ``on_skip(sop_instance_uid, reason)`` hears of
    each when given.
    """
    series: dict[tuple[str, str], list[SeriesFrame]] = defaultdict(list)
    for label, ds in datasets:
        try:
            pix = extract_frames(ds)
        except Exception as exc:  # noqa: BLE001 - colour, no decoder, no pixels: not image data
            if on_skip is not None:
                on_skip(str(ds.get("SOPInstanceUID", "")), f"no monochrome pixels: {exc}")
            continue
        position = ds.get("ImagePositionPatient")
        order = float(position[2]) if position else float(ds.get("InstanceNumber", 0) or 0)
        spacing = tuple(float(s) for s in (ds.get("PixelSpacing") or (1.0, 1.0)))
        uid = str(ds.get("SOPInstanceUID", ""))
        for f, frame in enumerate(pix.frames):
            series[(label, str(ds.get("SeriesInstanceUID", "")))].append(SeriesFrame(
                uid, order, f, len(pix.frames), frame, pix.bits_stored, pix.bits_allocated,
                (spacing[0], spacing[1])))
    for frames in series.values():
        frames.sort(key=lambda s: (s.position, s.frame))
    return dict(series)


__all__ = ["SeriesFrame", "read_files", "read_series"]
