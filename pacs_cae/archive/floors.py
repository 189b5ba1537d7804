"""The quality floors a lossy slice must meet to replace its lossless copy (docs/configuration.md).

A slice is stored lossy only when its decoded pixels were measured against the original: PSNR with
R = max - min of the original slice and the maximum absolute error (``codec.gate``), the compression
ratio against its BitsAllocated storage, and (``codec.require_gain``) a blob smaller than the lossless one.
Each miss is a ``fallback_reason`` that starts with the reason's family (``quality-gate``, ``no-gain``).

``max_abs_error`` is measured here for every model; for a model that supports an error bound the worker also
gives it to the encoder (:func:`pacs_cae.archive.compression.plan_for`), so this check then confirms a
guarantee instead of filtering slices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pacs_cae.codec.metrics import dynamic_range, max_abs_error, mse, psnr_db
from pacs_cae.config import CodecSettings, CompressionRule
from pacs_cae.store.repository import QUALITY_GATE_REASON

#: ``fallback_reason`` prefix when the CAE blob is not smaller than the lossless encoding (codec.require_gain).
NO_GAIN_REASON = "no-gain"


@dataclass(frozen=True)
class GateResult:
    """The quality gate's measurement; ``reason`` is None when the slice passes."""

    psnr_db: float
    max_abs_error: float
    reason: str | None


@dataclass(frozen=True)
class Floors:
    """The floors that apply to one series: the ``[codec]`` ones, tightened (never loosened) by its rule."""

    gate: bool
    min_psnr_db: float | None
    max_abs_error: float | None
    max_compression_ratio: float | None
    require_gain: bool

    @classmethod
    def for_rule(cls, codec: CodecSettings, rule: CompressionRule | None) -> Floors:
        def tighter(a: float | None, b: float | None, pick: Callable[[float, float], float]) -> float | None:
            return b if a is None else a if b is None else pick(a, b)

        r = rule or CompressionRule()
        return cls(
            gate=codec.gate,
            min_psnr_db=tighter(codec.min_psnr_db, r.min_psnr_db, max),
            max_abs_error=tighter(codec.max_abs_error, r.max_abs_error, min),
            max_compression_ratio=tighter(codec.max_compression_ratio, r.max_compression_ratio, min),
            require_gain=codec.require_gain,
        )

    def check(self, original: np.ndarray, decoded: np.ndarray, blob_bytes: int, original_bytes: int,
              lossless_bytes: int) -> GateResult:
        """Measure one decoded slice; ``reason`` names every floor it misses (None: it may be stored lossy)."""
        psnr, max_err = measure(original, decoded)
        reasons = []
        ratio = ratio_floor(original_bytes, blob_bytes, self.max_compression_ratio)
        if ratio:
            reasons.append(ratio)
        if self.gate:
            gate = quality_gate(original, decoded, self.min_psnr_db, self.max_abs_error)
            if gate.reason:
                reasons.append(gate.reason)
        if self.require_gain and blob_bytes >= lossless_bytes:
            reasons.append(f"{NO_GAIN_REASON}: CAE blob {blob_bytes} bytes >= lossless {lossless_bytes} bytes")
        return GateResult(psnr, max_err, "; ".join(reasons) or None)


def measure(original: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(PSNR dB with R = max - min of the original, max absolute error); PSNR is inf when exact and -inf for
    a flat original decoded with any error, so such a slice never passes a PSNR floor."""
    a, b = np.asarray(original), np.asarray(decoded)
    return psnr_db(mse(a, b), dynamic_range(a), undefined=-math.inf), max_abs_error(a, b)


def quality_gate(original: np.ndarray, decoded: np.ndarray, min_psnr_db: float | None,
                 max_abs_error: float | None) -> GateResult:
    """Compare a decoded slice with the original against the PSNR and maximum-error floors."""
    psnr, max_err = measure(original, decoded)
    reasons = []
    if min_psnr_db is not None and psnr < min_psnr_db:
        reasons.append(f"PSNR {psnr:.2f} dB < min_psnr_db {min_psnr_db:g}")
    if max_abs_error is not None and max_err > max_abs_error:
        reasons.append(f"max abs error {max_err:g} > max_abs_error {max_abs_error:g}")
    reason = f"{QUALITY_GATE_REASON}: " + "; ".join(reasons) if reasons else None
    return GateResult(psnr, max_err, reason)


def ratio_floor(original_bytes: int, blob_bytes: int, max_ratio: float | None) -> str | None:
    """The fallback reason when a lossy blob is compressed beyond ``max_ratio``:1, else None.

    Why a ceiling on compression: diagnostic acceptability of lossy MR has been validated up to a ratio
    (CAR: 24:1), not beyond, whatever a PSNR says about an average.
    """
    if max_ratio is None or blob_bytes <= 0:
        return None
    ratio = original_bytes / blob_bytes
    if ratio > max_ratio:
        return f"{QUALITY_GATE_REASON}: compression ratio {ratio:.1f}:1 > max_compression_ratio {max_ratio:g}:1"
    return None


__all__ = ["NO_GAIN_REASON", "Floors", "GateResult", "measure", "quality_gate", "ratio_floor"]
