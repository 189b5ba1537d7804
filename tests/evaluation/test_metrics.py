"""The metric definitions on arrays whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pacs_cae.codec.metrics import psnr_db
from pacs_cae.evaluation.metrics import background_mask, bits_per_pixel, mse, slice_metrics


def test_mse_and_psnr_use_the_original_slice_range() -> None:
    original = np.array([[0, 100], [200, 400]], dtype=np.uint16)
    decoded = original + np.array([[2, 0], [0, 0]], dtype=np.uint16)  # one pixel off by 2
    assert mse(original, decoded) == pytest.approx(1.0)  # 4 / 4 pixels
    m = slice_metrics(original, decoded, compressed_bytes=2, bits_allocated=16)
    assert m["psnr_db"] == pytest.approx(10 * math.log10(400**2 / 1.0))  # R = 400 - 0
    assert m["max_abs_error"] == 2


def test_lossless_is_infinite_psnr_and_zero_mse() -> None:
    original = np.arange(16, dtype=np.int16).reshape(4, 4) - 8
    m = slice_metrics(original, original.copy(), compressed_bytes=8, bits_allocated=16)
    assert m["mse"] == 0 and math.isinf(m["psnr_db"]) and math.isinf(m["psnr_fg_db"])


def test_background_is_below_five_percent_of_range_and_excluded_from_fg_psnr() -> None:
    original = np.array([[10, 14], [15, 110]], dtype=np.int32)  # R = 100; threshold 10 + 5 = 15
    assert background_mask(original).tolist() == [[True, True], [False, False]]
    decoded = original.copy()
    decoded[0, 0] += 10  # error only in the background
    m = slice_metrics(original, decoded, compressed_bytes=1, bits_allocated=16)
    assert m["mse"] == pytest.approx(25.0)
    assert math.isinf(m["psnr_fg_db"]) and not math.isinf(m["psnr_db"])


def test_sizes_bpp_and_both_ratios() -> None:
    original = np.zeros((8, 16), dtype=np.uint16)
    original[0, 0] = 4095
    m = slice_metrics(original, original, compressed_bytes=32, bits_allocated=16)
    assert m["original_bytes"] == 8 * 16 * 2
    assert m["bpp"] == pytest.approx(32 * 8 / 128) == bits_per_pixel(32, 8, 16)
    assert m["ratio_stored"] == pytest.approx(256 / 32)
    assert m["ratio_float32"] == pytest.approx(8 * 16 * 4 / 32)


def test_psnr_edge_cases() -> None:
    assert math.isinf(psnr_db(0.0, 0.0))
    assert math.isnan(psnr_db(1.0, 0.0))
    assert psnr_db(1.0, 10.0) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        mse(np.zeros((2, 2)), np.zeros((2, 3)))


def test_summary_averages_finite_psnr_and_totals_bytes() -> None:
    from pacs_cae.evaluation.evaluate import CodecResult

    def row(psnr: float, mse_: float, size: int) -> dict:
        return {
            "rows": 4,
            "columns": 4,
            "psnr_db": psnr,
            "psnr_fg_db": psnr,
            "mse": mse_,
            "max_abs_error": 1.0,
            "original_bytes": 32,
            "compressed_bytes": size,
            "encode_s": 0.001,
            "decode_s": 0.002,
        }

    mixed = CodecResult("x", "X", False, [row(30.0, 4.0, 8), row(math.inf, 0.0, 4), row(40.0, 2.0, 4)])
    s = mixed.summary()
    assert s["psnr_db"] == pytest.approx(35.0) and s["exact_slices"] == 1 and s["mse"] == pytest.approx(2.0)
    assert s["bpp"] == pytest.approx(16 * 8 / 48) and s["ratio_stored"] == pytest.approx(96 / 16)
    assert s["ratio_float32"] == pytest.approx(48 * 4 / 16) and s["encode_ms"] == pytest.approx(1.0)
    exact = CodecResult("y", "Y", True, [row(math.inf, 0.0, 8)] * 2).summary()
    assert math.isinf(exact["psnr_db"]) and exact["exact_slices"] == 2


def test_the_quality_gate_measures_the_same_psnr_as_evaluate() -> None:
    """The archive's gate (archive.ingest.measure) and evaluate's metrics are two codes for one definition."""
    from pacs_cae.archive.floors import measure

    rng = np.random.default_rng(5)
    for trial in range(20):
        original = rng.integers(0, 4096, (37, 29)).astype(np.uint16)
        decoded = np.clip(original + rng.normal(0, 1 + 40 * trial, original.shape), 0, 4095).astype(np.uint16)
        row = slice_metrics(original, decoded, 100, 16)
        gate_psnr, gate_max = measure(original, decoded)
        assert gate_psnr == pytest.approx(row["psnr_db"], abs=1e-9) and gate_max == row["max_abs_error"]
