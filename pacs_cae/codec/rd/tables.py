"""Integer probability tables: what makes decoding exact on every machine and in every execution mode.

Floats recomputed at decode time (a Gaussian CDF, a learned density) can differ in the last bit between CPUs,
libraries or modes, and one differing probability desynchronises an entropy decoder. So, as CompressAI's
``update()`` does, the models are evaluated **once, at export**, into integer frequency tables that are stored in
the weights file (and so covered by its sha256):

* ``gaussian``: one table per entry of a log-spaced scale table (:data:`SCALE_COUNT` standard deviations from
  :data:`~.priors.SCALE_MIN` to :data:`SCALE_MAX`); symbol ``v = round(y - mu)`` in ``[-L, L]``,
  ``L = ceil(TAIL_SIGMAS * scale)``;
* ``hyper``: one table per channel of ``z`` from the learned factorized density, over the integers that hold
  all but ``TAIL_MASS`` of it.

Each table has one extra **escape** symbol; a value outside the table's range codes the escape and is stored
verbatim beside the stream, so no value is ever clipped. Frequencies sum to ``2**PRECISION``, each >= 1.
At coding time the only float computation is the choice of table for each ``y`` element (from ``h_s`` run in
float64, see ``codec``), and that is an index into this fixed scale table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .priors import SCALE_MIN, FactorizedPrior

PRECISION = 16
SCALE_MAX = 256.0
SCALE_COUNT = 64
TAIL_SIGMAS = 6.0
TAIL_MASS = 1e-9
HYPER_SEARCH = 4096  # z values searched for the factorized tables' range: [-HYPER_SEARCH, HYPER_SEARCH]


def scale_table() -> np.ndarray:
    """The float64 standard deviations the Gaussian tables are built for (ascending)."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_COUNT))


def quantize_pmf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Probabilities (the last one the escape) -> int32 frequencies >= 1 summing to exactly 2**precision."""
    total = 1 << precision
    if pmf.size > total // 2:
        raise ValueError(f"table of {pmf.size} symbols is too large for {precision}-bit frequencies")
    p = np.clip(np.asarray(pmf, dtype=np.float64), 0.0, None)
    p = p / p.sum()
    freq = 1 + np.floor(p * (total - p.size)).astype(np.int64)
    short = total - int(freq.sum())
    order = np.argsort(-(p * (total - p.size) - np.floor(p * (total - p.size))), kind="stable")
    freq[order[:short]] += 1  # largest remainders first
    assert int(freq.sum()) == total and freq.min() >= 1
    return freq.astype(np.int32)


@dataclass(frozen=True)
class Tables:
    """A set of integer tables: row r covers symbols ``offset[r] .. offset[r] + length[r] - 1`` plus escape.

    ``freq[r, :length[r] + 1]`` holds the frequencies (the escape last); the rest of the row is 0.
    """

    freq: np.ndarray  # int32 (rows, width)
    offset: np.ndarray  # int32 (rows,)
    length: np.ndarray  # int32 (rows,) symbols in range, escape excluded

    @classmethod
    def from_pmfs(cls, pmfs: list[np.ndarray], offsets: list[int]) -> Tables:
        """``pmfs[r]`` = probabilities of the in-range symbols of row r (the escape gets the rest)."""
        rows = [quantize_pmf(np.append(p, max(0.0, 1.0 - float(np.sum(p))))) for p in pmfs]
        width = max(len(r) for r in rows)
        freq = np.zeros((len(rows), width), dtype=np.int32)
        for i, r in enumerate(rows):
            freq[i, : len(r)] = r
        return cls(freq, np.asarray(offsets, np.int32), np.asarray([len(r) - 1 for r in rows], np.int32))

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """For the weights file."""
        return {f"{prefix}.freq": torch.from_numpy(self.freq), f"{prefix}.offset": torch.from_numpy(self.offset),
                f"{prefix}.length": torch.from_numpy(self.length)}

    @classmethod
    def from_tensors(cls, state: dict[str, torch.Tensor], prefix: str) -> Tables:
        return cls(*(state[f"{prefix}.{k}"].numpy().astype(np.int32) for k in ("freq", "offset", "length")))


def gaussian_tables() -> Tables:
    """One table per scale: the mass of N(0, s) on each integer bin in [-L, L]."""
    pmfs, offsets = [], []
    for s in scale_table():
        half = math.ceil(TAIL_SIGMAS * s)
        v = torch.arange(-half, half + 1, dtype=torch.float64)
        mass = torch.special.ndtr((v + 0.5) / s) - torch.special.ndtr((v - 0.5) / s)
        pmfs.append(mass.numpy())
        offsets.append(-half)
    return Tables.from_pmfs(pmfs, offsets)


@torch.no_grad()
def hyper_tables(prior: FactorizedPrior, channels: int) -> Tables:
    """One table per z channel from the learned factorized density (float64, once)."""
    grid = torch.arange(-HYPER_SEARCH, HYPER_SEARCH + 1, dtype=torch.float64)
    cdf = torch.sigmoid(prior.double().logits_cumulative(grid.add(0.5).repeat(channels, 1, 1)))[:, 0]
    prior.float()
    pmfs, offsets = [], []
    for c in range(channels):
        row = cdf[c].numpy()
        lo = int(np.argmax(row > TAIL_MASS / 2))
        hi = int(np.argmax(row >= 1 - TAIL_MASS / 2))
        hi = max(hi, lo)
        upper = row[lo : hi + 1]
        lower = np.concatenate([[row[lo - 1] if lo > 0 else 0.0], row[lo:hi]])
        pmfs.append(upper - lower)
        offsets.append(int(grid[lo]))
    return Tables.from_pmfs(pmfs, offsets)
