"""dicom.pixels: normalisation, padding, restoration to the original dtype and BitsStored range."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from pacs_cae.dicom.pixels import (
    extract_frames,
    frames_to_pixel_data,
    normalize_slice,
    pad_amount,
    restore_slice,
    value_range,
)

CASES = [("uint8", 8), ("int8", 8), ("uint16", 12), ("int16", 12), ("uint16", 16), ("int16", 16)]

from codec_helpers import Phantom  # tests/codec is on sys.path under pytest


@pytest.mark.parametrize(("dtype", "bits"), CASES)
def test_normalise_then_restore_is_exact_without_a_network(
    dtype: str, bits: int, make_phantom: Phantom
) -> None:
    pixels = make_phantom(45, 70, dtype, bits)
    low, high = value_range(dtype, bits)
    pixels[0, 0], pixels[-1, -1] = low, high  # the extremes of the range must survive
    item = normalize_slice(pixels, bits)
    assert item.data.dtype == np.float32 and item.data.shape == (64, 96)
    assert float(item.data.min()) == 0.0 and float(item.data.max()) == 1.0
    back = restore_slice(item.data, rows=45, columns=70, dtype=item.dtype, bits_stored=bits,
                         value_min=item.value_min, value_max=item.value_max)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, pixels)


def test_value_ranges() -> None:
    assert value_range("uint16", 12) == (0, 4095)
    assert value_range("int16", 12) == (-2048, 2047)
    assert value_range("int8") == (-128, 127)
    with pytest.raises(ValueError):
        value_range("uint8", 9)
    with pytest.raises(ValueError):
        value_range("float32")


def test_padding_replicates_the_bottom_and_right_edges() -> None:
    pixels = np.arange(33 * 40, dtype=np.uint16).reshape(33, 40)
    item = normalize_slice(pixels)
    assert (item.pad_bottom, item.pad_right) == (31, 24) == (pad_amount(33), pad_amount(40))
    np.testing.assert_array_equal(item.data[33:, :40], np.repeat(item.data[32:33, :40], 31, axis=0))
    np.testing.assert_array_equal(item.data[:, 40:], np.repeat(item.data[:, 39:40], 24, axis=1))
    assert pad_amount(512) == 0


def test_restore_clips_to_bits_stored() -> None:
    out = restore_slice(np.array([[-0.5, 0.0, 1.0, 1.7]]), rows=1, columns=4, dtype="uint16",
                        bits_stored=12, value_min=0, value_max=4095)
    assert out.tolist() == [[0, 0, 4095, 4095]]


def test_constant_slice_round_trips() -> None:
    pixels = np.full((10, 10), -7, dtype=np.int16)
    item = normalize_slice(pixels)
    assert not item.data.any()
    back = restore_slice(item.data, rows=10, columns=10, dtype="int16", bits_stored=16,
                         value_min=item.value_min, value_max=item.value_max)
    np.testing.assert_array_equal(back, pixels)


def test_rejects_what_cannot_be_rebuilt() -> None:
    with pytest.raises(ValueError, match="BitsStored"):
        normalize_slice(np.array([[0, 5000]], dtype=np.uint16), bits_stored=12)
    with pytest.raises(ValueError):
        normalize_slice(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        normalize_slice(np.zeros((4, 4), dtype=np.float32))


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


def test_extract_frames_and_rebuild_pixel_data(make_phantom: Phantom) -> None:
    frames = np.stack([make_phantom(7, 9, "int16", 12, seed=s) for s in range(3)])
    ds = _dataset(frames)
    got = extract_frames(ds)
    assert (got.bits_allocated, got.bits_stored, got.pixel_representation) == (16, 12, 1)
    assert got.photometric_interpretation == "MONOCHROME1"
    assert len(got.frames) == 3
    for a, b in zip(got.frames, frames):
        np.testing.assert_array_equal(a, b)
    assert frames_to_pixel_data(got.frames, 16, 1) == ds.PixelData


def test_extract_frames_from_a_compressed_transfer_syntax(make_phantom: Phantom) -> None:
    frames = np.stack([make_phantom(7, 9, "int16", 12, seed=s) for s in range(2)])
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


def test_colour_is_refused(make_phantom: Phantom) -> None:
    ds = _dataset(make_phantom(4, 4, "int16", 12)[None], "RGB")
    with pytest.raises(ValueError, match="monochrome"):
        extract_frames(ds)
