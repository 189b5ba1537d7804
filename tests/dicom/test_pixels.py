"""dicom.pixels: a dataset's frames as arrays (native and encapsulated), and Pixel Data written back."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from pacs_cae.dicom.pixels import extract_frames, frames_to_pixel_data


def _frames(count: int, rows: int = 7, columns: int = 9) -> np.ndarray:
    """Signed 12-bit frames spanning the whole BitsStored range."""
    return np.stack([np.random.default_rng(s).integers(-2048, 2048, (rows, columns)).astype(np.int16)
                     for s in range(count)])


def _dataset(frames: np.ndarray, photometric: str = "MONOCHROME1") -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = frames.shape[-2:]
    ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 1
    ds.PixelData = frames_to_pixel_data(list(frames), 16, 1)
    return ds


def test_extract_frames_and_rebuild_pixel_data() -> None:
    frames = _frames(3)
    ds = _dataset(frames)
    got = extract_frames(ds)
    assert (got.bits_allocated, got.bits_stored, got.pixel_representation) == (16, 12, 1)
    assert got.photometric_interpretation == "MONOCHROME1"
    assert len(got.frames) == 3
    for a, b in zip(got.frames, frames):
        np.testing.assert_array_equal(a, b)
    assert frames_to_pixel_data(got.frames, 16, 1) == ds.PixelData


def test_extract_frames_from_a_compressed_transfer_syntax() -> None:
    frames = _frames(2)
    ds = _dataset(frames, "MONOCHROME2")
    ds.compress(RLELossless)  # encapsulated: pixels come through pydicom's decoder
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    got = extract_frames(ds)
    assert [f.dtype for f in got.frames] == [np.dtype("int16")] * 2
    for a, b in zip(got.frames, frames):
        np.testing.assert_array_equal(a, b)


def test_pixel_data_is_padded_to_even_length() -> None:
    data = frames_to_pixel_data([np.ones((3, 3), dtype=np.uint8)], 8, 0)
    assert len(data) == 10 and data.endswith(b"\0")


def test_colour_is_refused() -> None:
    ds = _dataset(_frames(1, 4, 4), "RGB")
    with pytest.raises(ValueError, match="monochrome"):
        extract_frames(ds)
