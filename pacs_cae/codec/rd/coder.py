"""Entropy coding of integer symbols over integer tables with constriction's ANS coder.

Symbols that share a table are coded together (one constriction call per table in use), in a fixed order both
sides know: ascending table index, and within a table ascending position. The frequency tables are exact
dyadic numbers (``freq / 2**PRECISION``), so the categorical models constriction builds from them are the same
on every machine. Values outside a table's range code its escape symbol and travel verbatim in ``overflow``.
"""

from __future__ import annotations

from typing import TypeAlias

import constriction
import numpy as np

from ..errors import CorruptBlobError
from .tables import PRECISION, Tables

# constriction's submodules are attributes of its extension module, not importable packages
# (constriction ships no type information: these are Any to mypy)
Categorical: TypeAlias = constriction.stream.model.Categorical
AnsCoder: TypeAlias = constriction.stream.stack.AnsCoder
Uniform: TypeAlias = constriction.stream.model.Uniform


class TableCoder:
    """The constriction models of one :class:`Tables`, built once."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.models = [
            Categorical(tables.freq[r, : n + 1].astype(np.float64) / (1 << PRECISION), perfect=False)
            for r, n in enumerate(tables.length.tolist())
        ]

    def _groups(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(rows, kind="stable")
        used, starts = np.unique(rows[order], return_index=True)
        return order, used, np.append(starts, rows.size)

    def encode(self, coder: AnsCoder, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Push ``values`` (int, flat) coded with table ``rows[i]``; returns the escaped values (flat order)."""
        symbols = values.astype(np.int64) - self.tables.offset[rows]
        length = self.tables.length[rows]
        escaped = (symbols < 0) | (symbols >= length)
        symbols = np.where(escaped, length, symbols).astype(np.int32)
        order, used, bounds = self._groups(rows)
        for k in range(len(used) - 1, -1, -1):  # a stack: push the group decoded last first
            coder.encode_reverse(symbols[order[bounds[k] : bounds[k + 1]]], self.models[int(used[k])])
        return values[escaped].astype(np.int32)

    def decode(self, coder: AnsCoder, rows: np.ndarray, overflow: np.ndarray) -> tuple[np.ndarray, int]:
        """Pop values for tables ``rows``; escapes take values from ``overflow``. Returns (values, used)."""
        symbols = np.empty(rows.size, dtype=np.int64)
        order, used, bounds = self._groups(rows)
        try:
            for k in range(len(used)):
                count = int(bounds[k + 1] - bounds[k])
                symbols[order[bounds[k] : bounds[k + 1]]] = coder.decode(self.models[int(used[k])], count)
        except Exception as exc:  # constriction raises on an exhausted or inconsistent stream
            raise CorruptBlobError(f"entropy-coded stream is damaged: {exc}") from exc
        length = self.tables.length[rows]
        escaped = symbols == length
        values = symbols + self.tables.offset[rows]
        n = int(escaped.sum())
        if n > overflow.size:
            raise CorruptBlobError("entropy-coded stream has more escapes than stored overflow values")
        values[escaped] = overflow[:n]
        return values, n


def new_coder(words: np.ndarray | None = None) -> AnsCoder:
    """An empty ANS coder, or one holding ``words`` (uint32) to decode."""
    return AnsCoder() if words is None else AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
