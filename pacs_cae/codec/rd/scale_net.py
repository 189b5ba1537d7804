"""The learned scale model of the residual (model 3): an integer MLP from the causal template to a scale class.

Trained on the training volumes only (``pacs_cae.train.rd_residual``), it predicts how spread out a residual
symbol is from its decoded neighbours (``context``): the inputs are integer log-codes of the neighbours'
dequantized residuals and of their reconstructed values relative to ``x_hat``, the flat flag and the
``x_hat`` intensity class; the output is a scale class 0..CLASSES-1 (class k ~ the Gaussian table 2k). The
encoder still picks the table of each (flat, class) context from the slice's own symbols (forward
adaptation), so the network only has to rank pixels by spread, and a miscalibration costs bits, never
correctness.

Exactness: the weights are integers (stored in the weights file), the activations integers, every layer is a
float64 matrix product whose products and sums are integers far below 2**53 (inputs <= 64, weights and
activations clipped, fan-in <= 16), then a division by a power of two and a floor -- exact in any summation
order, on any machine. It runs on the CPU with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Scale classes the network outputs (class k ~ Gaussian table 2k of 64).
CLASSES = 32
#: Integer log-code of a magnitude: edges ~2**(i/3), so a code step is ~1/3 octave; codes 0..len(EDGES).
EDGES = np.unique(np.rint(2.0 ** (np.arange(0, 46) / 3.0)).astype(np.int64))
#: Fixed-point scales: weights x 2**WEIGHT_BITS, hidden activations x 2**ACT_BITS.
WEIGHT_BITS = 6
ACT_BITS = 4
WEIGHT_MAX = (1 << 11) - 1
ACT_MAX = (1 << 14) - 1
HIDDEN = 16


def log_code(values: np.ndarray) -> np.ndarray:
    """Integer ~3 x log2(1 + |v|) (0 for 0), the network's input compression."""
    return np.searchsorted(EDGES, np.abs(values), side="right").astype(np.int64)


def inputs(residuals: np.ndarray, relative: np.ndarray, flat: np.ndarray, intensity: np.ndarray,
           step: int) -> np.ndarray:
    """(n, INPUTS) integer inputs from the template's residuals and relative values (each (K, n))."""
    return np.concatenate([log_code(residuals // step), log_code(relative // step),
                           8 * flat[None].astype(np.int64), 4 * intensity[None].astype(np.int64)]).T


INPUTS = 6 + 6 + 2


@dataclass(frozen=True)
class IntegerScaleNet:
    """Two hidden ReLU layers of integers; ``__call__`` maps integer inputs to scale classes exactly."""

    w1: np.ndarray  # (HIDDEN, INPUTS) int
    b1: np.ndarray  # (HIDDEN,) int, at scale 2**WEIGHT_BITS
    w2: np.ndarray  # (HIDDEN, HIDDEN)
    b2: np.ndarray  # at scale 2**(WEIGHT_BITS + ACT_BITS)
    w3: np.ndarray  # (1, HIDDEN)
    b3: np.ndarray  # at scale 2**(WEIGHT_BITS + ACT_BITS)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = x.astype(np.float64) @ self.w1.T.astype(np.float64) + self.b1  # scale 2**WEIGHT_BITS
        h = np.clip(np.floor(h / (1 << (WEIGHT_BITS - ACT_BITS))), 0, ACT_MAX)  # ReLU, scale 2**ACT_BITS
        h = h @ self.w2.T.astype(np.float64) + self.b2  # scale 2**(WEIGHT_BITS + ACT_BITS)
        h = np.clip(np.floor(h / (1 << WEIGHT_BITS)), 0, ACT_MAX)
        out = h @ self.w3.T.astype(np.float64) + self.b3
        classes = np.floor((out[:, 0] + (1 << (WEIGHT_BITS + ACT_BITS - 1))) / (1 << (WEIGHT_BITS + ACT_BITS)))
        return np.clip(classes, 0, CLASSES - 1).astype(np.int64)

    def tensors(self, prefix: str = "residual.scale_net") -> dict[str, torch.Tensor]:
        return {f"{prefix}.{k}": torch.from_numpy(np.asarray(getattr(self, k), dtype=np.int32))
                for k in ("w1", "b1", "w2", "b2", "w3", "b3")}

    @classmethod
    def from_tensors(cls, state: dict[str, torch.Tensor], prefix: str = "residual.scale_net"
                     ) -> IntegerScaleNet | None:
        """The network in a weights file, or ``None`` when the model has none."""
        if f"{prefix}.w1" not in state:
            return None
        parts = {k: state[f"{prefix}.{k}"].numpy().astype(np.int64) for k in ("w1", "b1", "w2", "b2", "w3", "b3")}
        net = cls(**parts)
        if (net.w1.shape != (HIDDEN, INPUTS) or net.w2.shape != (HIDDEN, HIDDEN) or net.w3.shape != (1, HIDDEN)
                or max(int(np.abs(w).max()) for w in (net.w1, net.w2, net.w3)) > WEIGHT_MAX):
            raise ValueError("residual scale network has the wrong shape or out-of-range weights")
        return net

    @classmethod
    def from_float(cls, layers: list[tuple[np.ndarray, np.ndarray]]) -> IntegerScaleNet:
        """Quantize a trained float MLP (three (weight, bias) pairs whose output is the class, continuous)."""
        (w1, b1), (w2, b2), (w3, b3) = layers
        q = float(1 << WEIGHT_BITS)
        acc = float(1 << (WEIGHT_BITS + ACT_BITS))

        def weights(w: np.ndarray) -> np.ndarray:
            return np.clip(np.rint(w * q), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int64)

        return cls(weights(w1), np.rint(b1 * q).astype(np.int64), weights(w2), np.rint(b2 * acc).astype(np.int64),
                   weights(w3), np.rint(b3 * acc).astype(np.int64))
