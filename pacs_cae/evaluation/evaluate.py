"""Rate-distortion evaluation: the CAE through the real codec (container and Brotli included) against standard
codecs on the very same integer slices, in one run.

The CAE's compressed size is the whole blob the archive would store (header + Brotli payload), and its decoded
slice is what a retrieve would return, so the figures are the product's, not the network's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pacs_cae.evaluation.baselines import StandardCodec, standard_codecs
from pacs_cae.evaluation.eval_slices import EvalSlice
from pacs_cae.evaluation.metrics import DEFINITIONS, float32_bytes, slice_metrics

CAE_FAMILY = "CAE"


@dataclass
class CodecResult:
    """Per-slice rows of one codec at one setting, and their summary."""

    name: str
    family: str
    lossless: bool
    rows: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """Means of per-slice PSNR/MSE; bpp and ratios from the byte totals (see ``metrics.DEFINITIONS``)."""
        n = len(self.rows)
        if not n:
            return {"slices": 0}
        pixels = sum(r["rows"] * r["columns"] for r in self.rows)
        original = sum(r["original_bytes"] for r in self.rows)
        compressed = sum(r["compressed_bytes"] for r in self.rows)
        as_float = sum(float32_bytes(r["rows"], r["columns"]) for r in self.rows)
        return {
            "slices": n,
            "psnr_db": _mean_db(r["psnr_db"] for r in self.rows),
            "psnr_min_db": min(r["psnr_db"] for r in self.rows),
            "psnr_fg_db": _mean_db(r["psnr_fg_db"] for r in self.rows),
            "exact_slices": sum(r["mse"] == 0 for r in self.rows),
            "mse": _mean(r["mse"] for r in self.rows),
            "max_abs_error": max(r["max_abs_error"] for r in self.rows),
            "original_bytes": original,
            "compressed_bytes": compressed,
            "bpp": compressed * 8 / pixels,
            "ratio_stored": original / compressed,
            "ratio_float32": as_float / compressed,
            "encode_ms": 1000 * _mean(r["encode_s"] for r in self.rows),
            "decode_ms": 1000 * _mean(r["decode_s"] for r in self.rows),
        }

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "lossless": self.lossless,
            "summary": self.summary(),
            "per_slice": self.rows,
        }


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return float(np.mean(vals)) if vals else math.nan


def _mean_db(values: Iterable[float]) -> float:
    """Mean of the finite per-slice PSNRs; +inf only when every slice was reconstructed exactly."""
    vals = [v for v in values if not math.isnan(v)]
    finite = [v for v in vals if not math.isinf(v)]
    if finite:
        return float(np.mean(finite))
    return math.inf if vals else math.nan


def _row(s: EvalSlice, decoded: np.ndarray, size: int, encode_s: float, decode_s: float) -> dict:
    rows, columns = s.pixels.shape
    return {
        "source": s.source,
        "index": s.index,
        "rows": rows,
        "columns": columns,
        "bits_stored": s.bits_stored,
        "bits_allocated": s.bits_allocated,
        **slice_metrics(s.pixels, decoded, size, s.bits_allocated),
        "encode_s": encode_s,
        "decode_s": decode_s,
    }


def evaluate_cae(codec, slices: Sequence[EvalSlice], chunk: int = 8) -> CodecResult:
    """Encode -> blob bytes -> decode through ``codec`` (a ``pacs_cae.codec.Codec``), ``chunk`` at a time."""
    result = CodecResult(f"CAE {codec.model_id}", CAE_FAMILY, False)
    for start in range(0, len(slices), chunk):
        part = list(slices[start : start + chunk])
        t0 = time.perf_counter()
        blobs = codec.encode([s.pixels for s in part], bits_stored=[s.bits_stored for s in part])
        t1 = time.perf_counter()
        decoded = codec.decode(blobs)
        t2 = time.perf_counter()
        for s, blob, out in zip(part, blobs, decoded, strict=True):
            result.rows.append(_row(s, out, len(blob), (t1 - t0) / len(part), (t2 - t1) / len(part)))
    return result


def evaluate_standard(codec: StandardCodec, slices: Sequence[EvalSlice]) -> CodecResult:
    """One standard codec over all slices."""
    result = CodecResult(codec.name, codec.family, codec.lossless)
    for s in slices:
        stream, decoded, encode_s, decode_s = codec.roundtrip(s.pixels, s.bits_stored)
        result.rows.append(_row(s, decoded, len(stream), encode_s, decode_s))
    return result


def run_evaluation(
    slices: Sequence[EvalSlice],
    codec=None,
    standard: Sequence[StandardCodec] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[CodecResult]:
    """The CAE (when given) first, then every standard codec, all on ``slices``."""
    if not slices:
        raise ValueError("no slices to evaluate")
    results = []
    if codec is not None:
        if progress:
            progress(f"CAE {codec.model_id}")
        results.append(evaluate_cae(codec, slices))
    for std in standard_codecs() if standard is None else standard:
        if progress:
            progress(std.name)
        results.append(evaluate_standard(std, slices))
    return results


def report_dict(
    results: Sequence[CodecResult], slices: Sequence[EvalSlice], *, model: dict | None, settings: dict
) -> dict:
    """Everything, JSON-ready: definitions, settings, the model, slices, per-codec summary and rows.

    +inf (lossless PSNR) is written as the string ``"inf"`` and NaN as null, so the output is strict JSON.
    """
    data = {
        "definitions": DEFINITIONS,
        "settings": settings,
        "model": model,
        "slices": [
            {
                "source": s.source,
                "index": s.index,
                "rows": s.pixels.shape[0],
                "columns": s.pixels.shape[1],
                "dtype": s.pixels.dtype.name,
                "bits_stored": s.bits_stored,
                "bits_allocated": s.bits_allocated,
            }
            for s in slices
        ],
        "codecs": [r.to_dict() for r in results],
    }
    return _json_safe(data)


def _json_safe(value):
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value
