"""The codec's input pixels come from one pinned decoder, whatever optional packages are installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import dcmread

from pacs_cae.dicom.pixels import extract_frames

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"])
def test_extract_frames_uses_the_pinned_plugin(name: str) -> None:
    path = TEST_FILES / name
    frames = extract_frames(dcmread(path)).frames
    plugin = "pydicom" if name.endswith("RLE.dcm") else "pylibjpeg"
    reference = dcmread(path)
    reference.pixel_array_options(decoding_plugin=plugin)
    assert len(frames) == 1
    assert np.array_equal(frames[0], reference.pixel_array)
