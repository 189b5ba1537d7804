"""Residual model 2: context coding of the residual symbols from decoded neighbours, along wavefronts.

The per-block Gaussian tables (model 1) treat every residual symbol as independent given its block. Real MR
residuals are not: scanner noise interpolated to the matrix and the learned layer's structural error are both
spatially correlated, which is what JPEG-LS and JPEG-XL exploit with causal prediction. A pixel-by-pixel
causal loop is too slow in numpy, so the pixels are coded along the wavefronts ``x + 2 y = t``: every pixel of a
front has its whole causal template -- W, WW, NW, N, NE, NN (JPEG-LS uses W, NW, N, NE) -- on earlier fronts, so
a front is one vectorised step (``columns + 2 rows`` steps per slice).

For each pixel, from those neighbours (integers both sides know; residual 0 and edge-replicated ``x_hat``
outside the slice):

* mean ``mu = round(sum_k a_k f_k / 64 / (2 delta + 1))`` over the neighbours' dequantized residuals and their
  reconstructed values relative to this pixel's ``x_hat``; the integer weights ``a_k`` (-128..127, one set for
  flat and one for other neighbourhoods -- flat = reconstructed neighbours within 2 delta of each other, e.g. a
  masked background, where the learned layer's own error would otherwise cost bits) are a least-squares fit
  the encoder made on this slice, stored in the stream;
* context = (flat or not, intensity quarter of ``x_hat``, bit length of ``sum_k |r~_k| // (2 delta + 1)``),
  and for each context the encoder chose the Gaussian table fitting its symbols (the map travels in the
  stream);
* symbol ``q - mu`` coded with that table.

Forward adaptation keeps the side information at a few hundred bits per slice, and only integer arithmetic
decides a probability, so decoding is exact on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from ..errors import CorruptBlobError
from .coder import TableCoder

#: The causal template (row, column offsets): all on earlier wavefronts x + 2y = t.
TEMPLATE = ((0, -1), (0, -2), (-1, -1), (-1, 0), (-1, 1), (-2, 0))
NEIGHBOURS = len(TEMPLATE)
FEATURES = 2 * NEIGHBOURS
#: Padding of the work buffers: rows above, columns either side.
PAD = 2
#: Flat neighbourhoods get their own predictor; intensity classes of x_hat; activity buckets.
FLAT = 2
LEVELS = 4
BUCKETS = 14
CONTEXTS = FLAT * LEVELS * BUCKETS
#: Predictor weights are integers in [-WEIGHT_HALF, WEIGHT_HALF) over WEIGHT_SCALE.
WEIGHT_SCALE = 64
WEIGHT_HALF = 128
WEIGHTS = FLAT * FEATURES
_EDGES = np.array([1 << k for k in range(BUCKETS - 1)], dtype=np.int64)


@lru_cache(maxsize=8)
def _fronts(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row-major and padded flat index of every pixel in decoding order, front bounds, neighbour offsets)."""
    width = columns + 2 * PAD
    y, x = np.mgrid[0:rows, 0:columns]
    t = (x + 2 * y).ravel()
    order = np.argsort(t, kind="stable")
    padded = ((y + PAD) * width + (x + PAD)).ravel()[order]
    bounds = np.searchsorted(t[order], np.arange(t.max() + 2), side="left")
    offsets = np.array([dr * width + dc for dr, dc in TEMPLATE], dtype=np.int64)
    return order.astype(np.int64), padded.astype(np.int64), bounds.astype(np.int64), offsets


def _buffers(x_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat zero residual buffer and flat edge-padded x_hat, PAD rows above and PAD columns either side."""
    xh = np.pad(x_hat.astype(np.int64), ((PAD, 0), (PAD, PAD)), mode="edge")
    return np.zeros(xh.size, dtype=np.int64), xh.ravel()


def _features(res: np.ndarray, xh: np.ndarray, at: np.ndarray, offsets: np.ndarray, delta: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """(features (FEATURES, n), flat flag) of the pixels at padded flat indices ``at``."""
    where = at[None, :] + offsets[:, None]
    r = res[where]
    values = xh[where] + r
    flat = (values.max(axis=0) - values.min(axis=0)) <= 2 * delta
    return np.concatenate([r, values - xh[at][None]]), flat


def _mean(features: np.ndarray, weights: np.ndarray, flat: np.ndarray, step: int) -> np.ndarray:
    """round(sum_k a_k f_k / WEIGHT_SCALE / step) with the flat or non-flat weights, integers only."""
    num = np.where(flat, weights[1] @ features, weights[0] @ features)
    den = WEIGHT_SCALE * step
    return (2 * num + den) // (2 * den)


def activity_contexts(features: np.ndarray, flat: np.ndarray, intensity: np.ndarray, step: int) -> np.ndarray:
    """Model 2's context: (flat, intensity quarter, bit length of sum_k |r~_k| // step), 0..CONTEXTS-1."""
    activity = np.abs(features[:NEIGHBOURS]).sum(axis=0) // step
    bucket = np.searchsorted(_EDGES, activity, side="right")
    return (flat.astype(np.int64) * LEVELS + intensity) * BUCKETS + bucket


#: A context function: (features, flat, intensity, step) -> context index per pixel.
ContextFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def intensity_classes(x_hat: np.ndarray, value_min: int, value_max: int) -> np.ndarray:
    """Quarter of the slice's range each learned-layer pixel falls in (0..LEVELS-1), integers only."""
    span = max(1, value_max - value_min + 1)
    return np.clip((x_hat.astype(np.int64) - value_min) * LEVELS // span, 0, LEVELS - 1)


def _fit_weights(features: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares predictor weights of ``target`` from ``features``, as integers over WEIGHT_SCALE."""
    f = features.astype(np.float64)
    t = target.astype(np.float64)
    if not t.size:
        return np.zeros(FEATURES, dtype=np.int64)
    gram = f @ f.T + 1e-3 * np.eye(FEATURES) * max(1.0, float(np.mean(t * t)) * t.size)
    solution = np.linalg.solve(gram, f @ t)
    return np.clip(np.rint(solution * WEIGHT_SCALE), -WEIGHT_HALF, WEIGHT_HALF - 1).astype(np.int64)


def _table_for(v: np.ndarray, scales: np.ndarray) -> int:
    rms = math.sqrt(float(np.mean(v.astype(np.float64) ** 2))) if v.size else 0.0
    return min(int(np.searchsorted(scales, rms, side="left")), scales.size - 1)


def encode(coder: object, symbols: np.ndarray, delta: int, x_hat: np.ndarray, intensity: np.ndarray,
           tables: TableCoder, scales: np.ndarray, table_choice: object, weight_choice: object,
           contexts: ContextFn = activity_contexts, count: int = CONTEXTS) -> np.ndarray:
    """Push the residual symbols (2-D) of one slice; returns the escaped values in decoding order.

    ``contexts`` (with ``count`` values) groups the pixels that share a table: model 2's activity buckets, or
    model 3's learned scale classes (``scale_net``)."""
    rows, columns = symbols.shape
    step = 2 * delta + 1
    pixels, at, bounds, offsets = _fronts(rows, columns)
    res, xh = _buffers(x_hat)
    q = symbols.astype(np.int64).ravel()[pixels]  # in decoding order
    res[at] = q * step  # the dequantized residual both sides know
    features, flat = _features(res, xh, at, offsets, delta)
    weights = np.zeros((FLAT, FEATURES), dtype=np.int64)
    for f in range(FLAT):
        weights[f] = _fit_weights(features[:, flat == f], res[at][flat == f])
    v = q - _mean(features, weights, flat, step)
    ctx = contexts(features, flat, intensity.ravel()[pixels], step)
    table_map = np.zeros(count, dtype=np.int64)
    for c in np.unique(ctx):
        table_map[c] = _table_for(v[ctx == c], scales)
    table_rows = table_map[ctx]
    overflow: list[np.ndarray] = []
    for k in range(bounds.size - 2, -1, -1):  # a stack: the last front decoded is pushed first
        part = slice(int(bounds[k]), int(bounds[k + 1]))
        overflow.append(tables.encode(coder, v[part], table_rows[part]))
    coder.encode_reverse(table_map.astype(np.int32), table_choice)  # type: ignore[attr-defined]
    coder.encode_reverse((weights.ravel() + WEIGHT_HALF).astype(np.int32), weight_choice)  # type: ignore
    return np.concatenate(overflow[::-1]) if overflow else np.zeros(0, np.int32)


def decode(coder: object, shape: tuple[int, int], delta: int, x_hat: np.ndarray, intensity: np.ndarray,
           tables: TableCoder, table_choice: object, weight_choice: object, overflow: np.ndarray,
           contexts: ContextFn = activity_contexts, count: int = CONTEXTS) -> tuple[np.ndarray, int]:
    """Pop what :func:`encode` pushed: (symbols of ``shape``, overflow values used)."""
    rows, columns = shape
    step = 2 * delta + 1
    try:
        weights = np.asarray(coder.decode(weight_choice, WEIGHTS),  # type: ignore[attr-defined]
                             dtype=np.int64).reshape(FLAT, FEATURES) - WEIGHT_HALF
        table_map = np.asarray(coder.decode(table_choice, count), dtype=np.int64)  # type: ignore
    except Exception as exc:  # constriction: exhausted or inconsistent stream
        raise CorruptBlobError(f"entropy-coded stream is damaged: {exc}") from exc
    _, at, bounds, offsets = _fronts(rows, columns)
    res, xh = _buffers(x_hat)
    width = columns + 2 * PAD
    classes = np.zeros(res.size, dtype=np.int64)
    classes.reshape(-1, width)[PAD:, PAD : PAD + columns] = intensity
    used = 0
    for k in range(bounds.size - 1):
        front = at[int(bounds[k]) : int(bounds[k + 1])]
        features, flat = _features(res, xh, front, offsets, delta)
        ctx = contexts(features, flat, classes[front], step)
        v, n = tables.decode(coder, table_map[ctx], overflow[used:])
        used += n
        res[front] = (v + _mean(features, weights, flat, step)) * step
    q = res.reshape(-1, width)[PAD:, PAD : PAD + columns] // step
    return q, used
