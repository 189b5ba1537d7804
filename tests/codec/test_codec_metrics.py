"""codec.metrics: one PSNR for the quality gate, evaluation and training, with the flat-slice case explicit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pacs_cae.archive.floors import measure
from pacs_cae.codec.metrics import dynamic_range, max_abs_error, mse, psnr, psnr_db


def test_psnr_uses_the_original_slice_range() -> None:
    original = np.array([[0, 100], [50, 100]], dtype=np.uint16)
    decoded = original + np.array([[1, 0], [0, 1]], dtype=np.uint16)
    assert mse(original, decoded) == 0.5 and dynamic_range(original) == 100.0
    assert psnr(original, decoded) == pytest.approx(10 * math.log10(100 * 100 / 0.5))
    assert max_abs_error(original, decoded) == 1.0


def test_exact_is_infinite_and_a_flat_slice_with_error_is_what_the_caller_says() -> None:
    flat = np.full((4, 4), 7, dtype=np.int16)
    assert psnr(flat, flat) == math.inf
    assert math.isnan(psnr(flat, flat + 1))  # evaluation: no defined PSNR, left out of means
    assert psnr(flat, flat + 1, undefined=-math.inf) == -math.inf
    # the quality gate never lets such a slice pass a PSNR floor
    assert measure(flat, flat + 1) == (-math.inf, 1.0)
    assert psnr_db(0.25, 1.0) == pytest.approx(10 * math.log10(4))  # training: R = 1 on [0, 1] slices
