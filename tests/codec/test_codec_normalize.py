"""codec.normalize: normalisation, padding, restoration to the original dtype and BitsStored range."""

from __future__ import annotations

import numpy as np
import pytest

from pacs_cae.codec.normalize import normalize_slice, pad_amount, restore_slice, unit_range, value_range

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


def test_unit_range_maps_float_data_like_normalize_slice() -> None:
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
    np.testing.assert_array_equal(unit_range(pixels.astype(np.float32)), normalize_slice(pixels).data[:3, :4])
    assert not unit_range(np.full((2, 2), 5.0)).any()
