"""Bjøntegaard delta rate: the mean bit-rate difference of two rate-distortion curves at equal PSNR.

Each curve is log(bpp) as a function of PSNR, interpolated piecewise-cubically and monotonically
(``scipy.interpolate.PchipInterpolator``, the "piecewise cubic" variant of VCEG-AL22 / ITU-T H-Series
Supplement 19), over the PSNR interval where both curves are measured. The BD-rate is
``exp(mean(log bpp_test - log bpp_reference)) - 1``, in percent: -10 % means the tested codec needs 10 %
fewer bits than the reference for the same PSNR, on average over that interval.

Against "the best of" several references the reference curve is their lower envelope: at each PSNR the
fewest bits any of them needs there. The envelope is not a PCHIP itself, so every mean here is taken on the
same dense PSNR grid (trapezoid rule); for two PCHIPs this agrees with the exact integral to ~1e-6.

When a BD-rate cannot be computed (fewer than two finite points on a curve, no PSNR overlap) the value is
``None`` and ``reason`` says why: an extrapolated figure would be an invented one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Points of the PSNR grid the curves are compared on.
GRID_POINTS = 2001

DEFINITION = (
    "Bjontegaard delta rate: exp(mean over the PSNR overlap of ln bpp_test - ln bpp_reference) - 1, in percent; "
    "ln bpp interpolated over PSNR by a monotone piecewise-cubic (PCHIP) fit; negative = the learned codec needs "
    "fewer bits for the same PSNR. 'best of' uses the lowest rate of those references at each PSNR."
)

Point = tuple[float, float]  # (bpp, psnr_db)


@dataclass(frozen=True)
class BDRate:
    """One BD-rate figure, the PSNR interval it was averaged over, or why there is none."""

    percent: float | None
    psnr_low_db: float | None = None
    psnr_high_db: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        return {
            "bd_rate_percent": self.percent,
            "psnr_low_db": self.psnr_low_db,
            "psnr_high_db": self.psnr_high_db,
            "reason": self.reason,
        }


class _Curve:
    """ln(bpp) against PSNR through a curve's finite points, defined on [low, high] only."""

    def __init__(self, name: str, points: Iterable[Point]) -> None:
        from scipy.interpolate import PchipInterpolator

        best: dict[float, float] = {}
        for bpp, psnr in points:
            if bpp > 0 and math.isfinite(bpp) and math.isfinite(psnr):
                best[psnr] = min(bpp, best.get(psnr, math.inf))  # equal PSNR: the cheaper point
        self.name = name
        self.count = len(best)
        if self.count < 2:
            self.low = self.high = math.nan
            return
        levels = np.array(sorted(best))
        self.low, self.high = float(levels[0]), float(levels[-1])
        self._fit = PchipInterpolator(levels, np.log([best[p] for p in levels]), extrapolate=False)

    def problem(self) -> str | None:
        if self.count < 2:
            return f"{self.name} has {self.count} point(s) with finite PSNR; a BD-rate needs at least 2"
        return None

    def log_rate(self, psnr: np.ndarray) -> np.ndarray:
        """ln(bpp) at each PSNR; NaN outside the measured interval."""
        return self._fit(psnr)


def _mean_difference(test: _Curve, references: Sequence[_Curve], window: tuple[float, float] | None) -> BDRate:
    problems = [p for p in (c.problem() for c in (test, *references)) if p]
    if problems:
        return BDRate(None, reason="; ".join(problems))
    low, high = max(test.low, min(r.low for r in references)), min(test.high, max(r.high for r in references))
    if window is not None:
        low, high = max(low, window[0]), min(high, window[1])
    if not high > low:
        spans = ", ".join(f"{c.name} {c.low:.1f}-{c.high:.1f} dB" for c in (test, *references))
        where = f" within {window[0]:g}-{window[1]:g} dB" if window else ""
        return BDRate(None, reason=f"the PSNR ranges do not overlap{where}: {spans}")
    grid = np.linspace(low, high, GRID_POINTS)
    reference = np.fmin.reduce([r.log_rate(grid) for r in references])  # NaN where no reference is measured
    covered = np.isfinite(reference)
    if covered.sum() < 2:
        return BDRate(None, reason="the references are measured on too little of the PSNR overlap")
    diff = test.log_rate(grid) - reference
    if covered.all():
        mean = float(np.trapezoid(diff, grid) / (high - low))
        note = None
    else:  # a gap between the references' intervals: average where one is measured, and say so
        mean = float(np.mean(diff[covered]))
        note = f"references measured on {100 * covered.mean():.0f} % of the interval only"
    return BDRate(100.0 * math.expm1(mean), float(low), float(high), note)


def bd_rate(
    test: Iterable[Point],
    reference: Iterable[Point],
    *,
    window: tuple[float, float] | None = None,
    names: tuple[str, str] = ("test", "reference"),
) -> BDRate:
    """BD-rate of ``test`` against ``reference`` ((bpp, PSNR dB) points), over their PSNR overlap.

    ``window`` (low, high dB) further restricts the interval, e.g. (45, 65) for the diagnostic range.
    """
    return _mean_difference(_Curve(names[0], test), [_Curve(names[1], reference)], window)


def bd_rate_vs_best(
    test: Iterable[Point],
    references: Mapping[str, Iterable[Point]],
    *,
    window: tuple[float, float] | None = None,
    name: str = "test",
) -> BDRate:
    """BD-rate of ``test`` against the lowest rate of any of ``references`` at each PSNR."""
    curves = [_Curve(n, pts) for n, pts in references.items()]
    if not curves:
        return BDRate(None, reason="no reference curves")
    usable = [c for c in curves if c.problem() is None] or curves  # a one-point family cannot lower the envelope
    return _mean_difference(_Curve(name, test), usable, window)
