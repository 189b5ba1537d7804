"""dicom.series: the one reader of DICOM files as series of frames (training and evaluation sources)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pacs_cae.dicom.series import read_files, read_series
from pacs_cae.testing.factories import make_mr_series, make_rgb


def test_frames_come_in_slice_order_and_other_files_are_left_out(tmp_path: Path) -> None:
    series = make_mr_series(3, rows=32, cols=32)
    for i, ds in enumerate(reversed(series)):  # written in the wrong order on purpose
        ds.save_as(tmp_path / f"{i}.dcm", enforce_file_format=True)
    rgb = make_rgb(rows=8, cols=8)
    rgb.save_as(tmp_path / "rgb.dcm", enforce_file_format=True)
    (tmp_path / "notes.txt").write_text("not DICOM")
    skipped: list[tuple[str, str]] = []
    found = read_series((("folder", ds) for ds in read_files(tmp_path)), lambda uid, why: skipped.append((uid, why)))
    frames = found[("folder", str(series[0].SeriesInstanceUID))]
    assert [f.sop_instance_uid for f in frames] == [str(ds.SOPInstanceUID) for ds in series]
    for frame, ds in zip(frames, series):
        np.testing.assert_array_equal(frame.pixels, ds.pixel_array)
        assert (frame.bits_stored, frame.frames_in_instance) == (int(ds.BitsStored), 1)
    assert [uid for uid, _ in skipped] == [str(rgb.SOPInstanceUID)] and "monochrome" in skipped[0][1]
