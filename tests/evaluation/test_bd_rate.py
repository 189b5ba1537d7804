"""BD-rate on curves whose answer is known: constant rate factors, log-linear curves, no overlap, envelopes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pacs_cae.evaluation.bd_rate import bd_rate, bd_rate_vs_best

PSNR = [38.0, 44.0, 51.0, 57.0, 66.0]
BPP = [0.12, 0.25, 0.55, 0.9, 1.9]


def curve(factor: float = 1.0, psnr=PSNR, bpp=BPP) -> list[tuple[float, float]]:
    return [(b * factor, p) for b, p in zip(bpp, psnr, strict=True)]


@pytest.mark.parametrize("factor", [0.8, 1.0, 1.25, 3.0])
def test_constant_rate_factor_is_the_bd_rate(factor: float) -> None:
    result = bd_rate(curve(factor), curve())
    assert result.percent == pytest.approx(100 * (factor - 1), abs=1e-9)
    assert (result.psnr_low_db, result.psnr_high_db) == (38.0, 66.0) and result.reason is None


def test_log_linear_curves_match_the_closed_form() -> None:
    # ln bpp = a + b*psnr on both; PCHIP reproduces a line exactly, so the mean difference over [lo, hi] is
    # (a1 - a2) + (b1 - b2) * (lo + hi) / 2.
    p_test, p_ref = np.linspace(40, 70, 7), np.linspace(35, 65, 5)
    test = [(math.exp(-6 + 0.11 * p), p) for p in p_test]
    ref = [(math.exp(-5.5 + 0.10 * p), p) for p in p_ref]
    lo, hi = 40.0, 65.0
    expected = 100 * math.expm1(-0.5 + 0.01 * (lo + hi) / 2)
    result = bd_rate(test, ref)
    assert result.percent == pytest.approx(expected, abs=1e-6)
    assert (result.psnr_low_db, result.psnr_high_db) == pytest.approx((lo, hi))


def test_window_restricts_the_interval() -> None:
    result = bd_rate(curve(0.5), curve(), window=(45.0, 60.0))
    assert result.percent == pytest.approx(-50.0) and (result.psnr_low_db, result.psnr_high_db) == (45.0, 60.0)


def test_no_overlap_gives_none_and_the_reason() -> None:
    high = [(b, p + 40) for b, p in curve()]
    result = bd_rate(curve(), high, names=("learned", "JPEG 2000"))
    assert result.percent is None and "do not overlap" in result.reason and "JPEG 2000 78.0-106.0" in result.reason


def test_window_outside_the_overlap_gives_none() -> None:
    result = bd_rate(curve(), curve(), window=(80.0, 90.0))
    assert result.percent is None and "within 80-90 dB" in result.reason


def test_one_point_is_not_a_curve() -> None:
    result = bd_rate([(2.6, 31.7)], curve(), names=("CAE cae-paper", "JPEG 2000"))
    assert result.percent is None and "CAE cae-paper has 1 point" in result.reason


def test_lossless_and_empty_points_do_not_count() -> None:
    points = [*curve(), (3.1, math.inf), (0.0, 30.0)]
    assert bd_rate(points, curve(2.0)).percent == pytest.approx(-50.0)


def test_best_of_takes_the_cheapest_reference_at_each_psnr() -> None:
    # A is cheaper below 50 dB, B above: the envelope is 0.5x the test curve's rate below 50 dB and 0.8x above.
    psnr = list(np.linspace(38, 66, 57))
    bpp = [math.exp(-4 + 0.08 * p) for p in psnr]
    test = curve(1.0, psnr, bpp)
    a = [(b * (0.5 if p <= 50 else 4.0), p) for b, p in zip(bpp, psnr, strict=True)]
    b = [(bb * (4.0 if p <= 50 else 0.8), p) for bb, p in zip(bpp, psnr, strict=True)]
    best = bd_rate_vs_best(test, {"A": a, "B": b})
    # ln(test/envelope) = ln 2 over [38, 50] and ln 1.25 over [50, 66] (the switch is a kink between samples)
    expected = 100 * math.expm1((12 * math.log(2) + 16 * math.log(1.25)) / 28)
    assert best.percent == pytest.approx(expected, abs=0.5)
    assert best.percent > bd_rate(test, a).percent and best.percent > bd_rate(test, b).percent


def test_best_of_ignores_a_one_point_family() -> None:
    result = bd_rate_vs_best(curve(), {"A": curve(2.0), "B": [(0.01, 50.0)]})
    assert result.percent == pytest.approx(-50.0)
