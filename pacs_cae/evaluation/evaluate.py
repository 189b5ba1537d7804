"""Rate-distortion evaluation: the learned codec through the real codec path (container and entropy coding
included) against standard codecs on the very same integer slices, in one run.

The learned codec's compressed size is the whole blob the archive would store, and its decoded slice is what a
retrieve would return, so the figures are the product's, not the network's.

What a learned codec must offer to be evaluated (:class:`LearnedCodec`): ``model_id``, ``encode(slices, *,
bits_stored=...)`` and ``decode(blobs)``, as ``pacs_cae.codec.Codec`` does. A codec with several operating
points also has ``qualities`` -- a count N (points 1..N) or a sequence of quality values -- and takes
``encode(..., quality=q)`` for each (:func:`operating_points`); without ``qualities`` (``None``, 0 or empty)
it has one operating point and ``encode`` is called without ``quality``. Every operating point is evaluated,
one result each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pacs_cae.evaluation.baselines import StandardCodec, standard_codecs
from pacs_cae.evaluation.bd_rate import DEFINITION as BD_DEFINITION
from pacs_cae.evaluation.bd_rate import bd_rate, bd_rate_vs_best
from pacs_cae.evaluation.eval_slices import EvalSlice
from pacs_cae.evaluation.metrics import DEFINITIONS, float32_bytes, slice_metrics

#: ``family`` of every operating point of the learned codec (one curve in plots and BD-rates).
LEARNED_FAMILY = "learned"

#: ``family`` of the learned codec's guaranteed-error-bound points (``encode(..., max_abs_error=delta)``).
BOUND_FAMILY = "learned bound"
#: The bounds evaluated by default (issue 11: beside JPEG-LS near-lossless at the same NEAR).
BOUNDS = (0, 1, 2, 4, 8)

#: The standard families the learned codec's BD-rate is taken against "at each rate, the best of".
BEST_OF_FAMILIES = ("JPEG 2000", "JPEG-XL", "AVIF")


class LearnedCodec(Protocol):
    """The interface evaluation needs (``pacs_cae.codec.Codec`` has it; ``qualities`` is optional)."""

    @property
    def model_id(self) -> str: ...

    def encode(
        self, slices: Sequence[np.ndarray], *, bits_stored: int | Sequence[int | None] | None = None
    ) -> list[bytes]: ...

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]: ...


def operating_points(codec: LearnedCodec) -> list[int | None]:
    """The values ``encode(..., quality=)`` takes, in order; ``[None]`` (one point, no ``quality`` argument)
    for a codec without ``qualities``.

    ``qualities`` is either a count N (the points are 1..N, as the rate-distortion family in ``codec.rd``
    has it) or a sequence of the quality values themselves; ``None``/0/empty means a single point.
    """
    qualities = getattr(codec, "qualities", None)
    if qualities is None or isinstance(qualities, bool):
        return [None]
    points: list[int | None]
    if isinstance(qualities, (int, np.integer)):
        points = list(range(1, int(qualities) + 1))
        return points or [None]
    points = [int(q) for q in qualities]
    if len(set(points)) != len(points):
        raise ValueError(f"{codec.model_id}: qualities repeat: {points}")
    return points or [None]


@dataclass
class CodecResult:
    """Per-slice rows of one codec at one setting, and their summary."""

    name: str
    family: str
    lossless: bool
    rows: list[dict] = field(default_factory=list)
    quality: int | None = None  # the learned codec's operating point (None: its only one, or a standard codec)
    bound: int | None = None  # the max_abs_error the blobs promise (learned bound points only)

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
            "quality": self.quality,
            "max_abs_error_bound": self.bound,
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


def select_points(codec: LearnedCodec, qualities: Sequence[int] | None = None) -> list[int | None]:
    """The operating points to evaluate: all, or those in ``qualities`` (in the codec's order).

    Raises ``ValueError`` naming what the codec offers when a quality is not one of its operating points.
    """
    points = operating_points(codec)
    if not qualities:
        return points
    unknown = sorted(set(qualities) - set(points))
    if unknown:
        offered = "one operating point (no quality setting)" if points == [None] else f"qualities {points}"
        raise ValueError(f"{codec.model_id} has no quality {unknown}; it offers {offered}")
    return [q for q in points if q in set(qualities)]


def learned_name(model_id: str, quality: int | None) -> str:
    """Row label of one operating point: ``"CAE cae-paper"`` (a one-point codec), ``"mshp q3"``."""
    return f"CAE {model_id}" if quality is None else f"{model_id} q{quality}"


def evaluate_learned(
    codec: LearnedCodec, slices: Sequence[EvalSlice], quality: int | None = None, chunk: int = 8
) -> CodecResult:
    """Encode -> blob bytes -> decode through ``codec`` at one operating point, ``chunk`` slices at a time."""
    result = CodecResult(learned_name(codec.model_id, quality), LEARNED_FAMILY, False, quality=quality)
    return _through(codec, slices, result, {} if quality is None else {"quality": quality}, chunk)


def evaluate_bound(codec: LearnedCodec, slices: Sequence[EvalSlice], delta: int, chunk: int = 8) -> CodecResult:
    """The learned codec under ``max_abs_error=delta``; raises ``AssertionError`` if a pixel breaks the bound
    (the bound is a guarantee: a violation is a bug, never a figure to report)."""
    result = CodecResult(f"{codec.model_id} bound {delta}", BOUND_FAMILY, delta == 0, bound=delta)
    _through(codec, slices, result, {"max_abs_error": delta}, chunk)
    for s, row in zip(slices, result.rows):
        assert row["max_abs_error"] <= delta, f"{s.source}#{s.index}: error {row['max_abs_error']} > {delta}"
    return result


def _through(codec: LearnedCodec, slices: Sequence[EvalSlice], result: CodecResult, options: dict,
             chunk: int) -> CodecResult:
    """Fill ``result`` with one row per slice of ``codec.encode(..., **options)`` then ``decode``."""
    for start in range(0, len(slices), chunk):
        part = list(slices[start : start + chunk])
        t0 = time.perf_counter()
        blobs = codec.encode([s.pixels for s in part], bits_stored=[s.bits_stored for s in part], **options)
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
    codec: LearnedCodec | None = None,
    standard: Sequence[StandardCodec] | None = None,
    progress: Callable[[str], None] | None = None,
    qualities: Sequence[int] | None = None,
    bounds: Sequence[int] | None = None,
) -> list[CodecResult]:
    """Every operating point of the learned codec (when given; ``qualities`` picks some), its error-bound
    points (``bounds``, default :data:`BOUNDS`, when ``codec.supports_max_abs_error``), then every standard
    codec, all on ``slices``."""
    if not slices:
        raise ValueError("no slices to evaluate")
    results = []
    if codec is not None:
        for q in select_points(codec, qualities):
            if progress:
                progress(learned_name(codec.model_id, q))
            results.append(evaluate_learned(codec, slices, q))
        if getattr(codec, "supports_max_abs_error", False):
            for delta in BOUNDS if bounds is None else bounds:
                if progress:
                    progress(f"{codec.model_id} bound {delta}")
                results.append(evaluate_bound(codec, slices, delta))
    for std in standard_codecs() if standard is None else standard:
        if progress:
            progress(std.name)
        results.append(evaluate_standard(std, slices))
    return results


def rd_points(results: Sequence[CodecResult], family: str) -> list[tuple[float, float]]:
    """(bpp, mean PSNR) of a family's lossy settings."""
    points = []
    for r in results:
        if r.family == family and not r.lossless:
            s = r.summary()
            points.append((s["bpp"], s["psnr_db"]))
    return points


def bd_rate_section(
    results: Sequence[CodecResult], window: tuple[float, float] | None = None
) -> dict:
    """BD-rates of the learned codec against each lossy standard family and against the best of
    ``BEST_OF_FAMILIES`` at each PSNR (see :mod:`pacs_cae.evaluation.bd_rate`)."""
    learned = rd_points(results, LEARNED_FAMILY)
    section: dict = {"definition": BD_DEFINITION, "psnr_window_db": list(window) if window else None,
                     "against": []}
    points = [r for r in results if r.family == LEARNED_FAMILY]
    if not points:
        section["reason"] = "no learned codec was evaluated"
        return section
    name = points[0].name if len(points) == 1 else points[0].name.rsplit(" q", 1)[0]
    section["learned"] = name
    families = list(dict.fromkeys(r.family for r in results
                                  if r.family not in (LEARNED_FAMILY, BOUND_FAMILY) and not r.lossless))
    for family in families:
        figure = bd_rate(learned, rd_points(results, family), window=window, names=(name, family))
        section["against"].append({"reference": family, **figure.to_dict()})
    best = {f: rd_points(results, f) for f in BEST_OF_FAMILIES if f in families}
    if best:
        figure = bd_rate_vs_best(learned, best, window=window, name=name)
        section["against"].append({"reference": "best of " + ", ".join(best), **figure.to_dict()})
    return section


def report_dict(
    results: Sequence[CodecResult],
    slices: Sequence[EvalSlice],
    *,
    model: dict | None,
    settings: dict,
    bd_window: tuple[float, float] | None = None,
    skipped: Sequence[dict] = (),
) -> dict:
    """Everything, JSON-ready: definitions, settings, the model, slices, per-codec summary and rows, BD-rates,
    and the instances left out (``skipped``: each with ``sop_instance_uid`` and ``reason``).

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
                "sop_instance_uid": s.sop_instance_uid or None,
            }
            for s in slices
        ],
        "skipped": list(skipped),
        "codecs": [r.to_dict() for r in results],
        "bd_rate": bd_rate_section(results, bd_window),
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
