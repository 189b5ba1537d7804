"""Residual model 2: interlaced context coding of the residual symbols, conditioned on decoded neighbours.

The per-block Gaussian tables (model 1) treat every residual symbol as independent given its block. Real MR
residuals are not: scanner noise interpolated to the matrix and the learned layer's structural error are both
spatially correlated, which is what JPEG-LS and JPEG-XL exploit with causal prediction. Sequential causal
prediction cannot be vectorised in numpy, so the symbols are coded **interlaced** (as in Adam7/FLIF-style
pyramids): first a coarse lattice (every :data:`COARSE`-th row and column, per-block tables as in model 1),
then at each finer stride ``s`` the centre pixels of the coarse squares (diagonal neighbours at distance
``s``, all decoded) and then the edge midpoints (four neighbours at distance ``s``). Every pixel of a phase
sees up to four already-decoded neighbours -- on both sides, not only causal ones.

For each such pixel, from the neighbours' dequantized residuals ``r~`` (integers, the same on both sides):

* mean ``mu = round(w/4 * mean(r~) / (2 delta + 1))``, ``w`` in 0..4 chosen by the encoder per phase group;
* context bucket = bit length of ``(max(r~) - min(r~)) // (2 delta + 1)`` (local activity), capped;
* symbol ``q - mu`` coded with the Gaussian table the encoder chose for (phase group, bucket) -- the table map
  and the weights travel in the stream (forward adaptation: a few hundred bits per slice).

Only integer arithmetic decides a probability, so decoding is exact on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import CorruptBlobError
from . import residual
from .coder import TableCoder

#: Stride of the coarse lattice coded without neighbours.
COARSE = 8
#: Activity buckets per phase group.
BUCKETS = 14
#: Mean weights (in quarters) the encoder chooses from per phase group.
WEIGHTS = 5


@dataclass(frozen=True)
class Phase:
    """The pixels of one interlaced phase and their (up to four) decoded neighbours (-1: outside)."""

    group: int
    positions: np.ndarray  # flat indices
    neighbours: np.ndarray  # (n, 4) flat indices or -1


@lru_cache(maxsize=16)
def _plan(rows: int, columns: int) -> tuple[np.ndarray, tuple[Phase, ...]]:
    """(coarse lattice flat positions, fine phases in decoding order) of a ``rows`` x ``columns`` slice."""
    r, c = np.mgrid[0:rows, 0:columns]
    flat = r * columns + c
    coarse = flat[0::COARSE, 0::COARSE].ravel()
    phases = []
    group = 0
    s = COARSE // 2
    while s >= 1:
        diag = ((r % (2 * s)) == s) & ((c % (2 * s)) == s)
        cross = (((r % (2 * s)) == 0) & ((c % (2 * s)) == s)) | (((r % (2 * s)) == s) & ((c % (2 * s)) == 0))
        for mask, offsets in ((diag, ((-s, -s), (-s, s), (s, -s), (s, s))),
                              (cross, ((-s, 0), (s, 0), (0, -s), (0, s)))):
            pr, pc = r[mask], c[mask]
            nbrs = np.full((pr.size, 4), -1, dtype=np.int64)
            for k, (dr, dc) in enumerate(offsets):
                nr, nc = pr + dr, pc + dc
                ok = (nr >= 0) & (nr < rows) & (nc >= 0) & (nc < columns)
                nbrs[ok, k] = nr[ok] * columns + nc[ok]
            phases.append(Phase(group, (pr * columns + pc).astype(np.int64), nbrs))
            group += 1
        s //= 2
    return coarse.astype(np.int64), tuple(phases)


def _bucket_edges() -> np.ndarray:
    return np.array([(1 << k) for k in range(BUCKETS - 1)], dtype=np.int64)  # bit length via searchsorted


def _context(values: np.ndarray, neighbours: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum of available neighbour r~, their count, activity bucket) for one phase."""
    ok = neighbours >= 0
    got = np.where(ok, values[np.maximum(neighbours, 0)], 0)
    count = ok.sum(axis=1)
    total = got.sum(axis=1)
    big = np.iinfo(np.int64).max
    high = np.where(ok, got, -big).max(axis=1)
    low = np.where(ok, got, big).min(axis=1)
    activity = (high - low) // step
    bucket = np.searchsorted(_bucket_edges(), activity, side="right")
    return total, count, bucket


def _mean(total: np.ndarray, count: np.ndarray, weight: int, step: int) -> np.ndarray:
    """round(weight/4 * total / count / step) in integers (half up)."""
    num = weight * total
    den = 4 * count * step
    return (2 * num + den) // (2 * den)


def _table_for(v: np.ndarray, scales: np.ndarray) -> int:
    rms = math.sqrt(float(np.mean(v.astype(np.float64) ** 2))) if v.size else 0.0
    return int(min(np.searchsorted(scales, rms, side="left"), scales.size - 1))


def encode(coder: object, symbols: np.ndarray, delta: int, tables: TableCoder, scales: np.ndarray,
           table_choice: object, weight_choice: object) -> np.ndarray:
    """Push the residual symbols (2-D) of one slice; returns the escaped values (flat order of pushing)."""
    rows, columns = symbols.shape
    step = 2 * delta + 1
    q = symbols.ravel().astype(np.int64)
    values = q * step  # the dequantized residual both sides know
    coarse, phases = _plan(rows, columns)
    groups = max((p.group for p in phases), default=-1) + 1
    weights = np.zeros(groups, dtype=np.int64)
    table_map = np.zeros(groups * BUCKETS, dtype=np.int64)
    coded: list[tuple[np.ndarray, np.ndarray]] = []
    for phase in phases:
        total, count, bucket = _context(values, phase.neighbours, step)
        target = q[phase.positions]
        errors = [int(np.sum((target - _mean(total, count, w, step)) ** 2)) for w in range(WEIGHTS)]
        best = int(np.argmin(errors))
        weights[phase.group] = best
        v = target - _mean(total, count, best, step)
        for b in np.unique(bucket):
            table_map[phase.group * BUCKETS + b] = _table_for(v[bucket == b], scales)
        coded.append((v, table_map[phase.group * BUCKETS + bucket]))
    overflow = []
    for v, table_rows in reversed(coded):  # a stack: the last phase is pushed first
        overflow.append(tables.encode(coder, v, table_rows))  # type: ignore[arg-type]
    coarse_sym = q[coarse].reshape(len(range(0, rows, COARSE)), len(range(0, columns, COARSE)))
    overflow.append(residual.encode_blocks(coder, coarse_sym, tables, scales, table_choice))
    coder.encode_reverse(table_map.astype(np.int32), table_choice)  # type: ignore[attr-defined]
    coder.encode_reverse(weights.astype(np.int32), weight_choice)  # type: ignore[attr-defined]
    return np.concatenate(overflow[::-1]) if overflow else np.zeros(0, np.int32)


def decode(coder: object, shape: tuple[int, int], delta: int, tables: TableCoder, table_choice: object,
           weight_choice: object, overflow: np.ndarray) -> tuple[np.ndarray, int]:
    """Pop what :func:`encode` pushed: (symbols of ``shape``, overflow values used)."""
    rows, columns = shape
    step = 2 * delta + 1
    coarse, phases = _plan(rows, columns)
    groups = max((p.group for p in phases), default=-1) + 1
    try:
        weights = np.asarray(coder.decode(weight_choice, groups), dtype=np.int64)  # type: ignore[attr-defined]
        table_map = np.asarray(coder.decode(table_choice, groups * BUCKETS),  # type: ignore[attr-defined]
                               dtype=np.int64)
    except Exception as exc:  # constriction: exhausted or inconsistent stream
        raise CorruptBlobError(f"entropy-coded stream is damaged: {exc}") from exc
    q = np.zeros(rows * columns, dtype=np.int64)
    coarse_shape = (len(range(0, rows, COARSE)), len(range(0, columns, COARSE)))
    coarse_sym, used = residual.decode_blocks(coder, coarse_shape, tables, table_choice, overflow)
    q[coarse] = coarse_sym.ravel()
    values = q * step
    for phase in phases:
        total, count, bucket = _context(values, phase.neighbours, step)
        v, n = tables.decode(coder, table_map[phase.group * BUCKETS + bucket], overflow[used:])  # type: ignore
        used += n
        got = v + _mean(total, count, int(weights[phase.group]), step)
        q[phase.positions] = got
        values[phase.positions] = got * step
    return q.reshape(shape), used
