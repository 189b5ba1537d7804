"""The two probability models of the latents, in the form training needs (likelihoods of noisy values).

* :class:`FactorizedPrior` -- Balle et al. 2018, appendix 6.1: one learned univariate cumulative per channel,
  ``c(x) = sigmoid(f_K(...f_1(x)))`` with monotone layers ``f_k(x) = h + a * tanh(h)``, ``h = softplus(H) x + b``.
  Codes the hyper-latent ``z``.
* :func:`gaussian_likelihood` -- the mean-scale conditional of ``y`` (Minnen et al. 2018): the mass of
  N(mu, sigma) on [v - 1/2, v + 1/2], ``sigma`` bounded below by :data:`SCALE_MIN`.

At coding time both are replaced by integer tables (``tables``) evaluated once from these same functions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Smallest standard deviation of the conditional Gaussian (also the first entry of the scale table).
SCALE_MIN = 0.11
#: Likelihood floor in training, so that log2 never sees 0.
LIKELIHOOD_MIN = 1e-9


class FactorizedPrior(nn.Module):
    """Per-channel learned density for the hyper-latent; ``forward`` gives the likelihood of integer bins."""

    def __init__(self, channels: int, hidden: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *hidden, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for k in range(len(dims) - 1):
            init = math.log(math.expm1(1 / scale / dims[k + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[k + 1], dims[k]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[k + 1], 1) - 0.5))
            if k < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[k + 1], 1)))

    def logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, L) -> logit of the cumulative at x, (C, 1, L)."""
        for k, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(matrix.to(x.dtype)), x) + bias.to(x.dtype)
            if k < len(self.factors):
                x = x + torch.tanh(self.factors[k].to(x.dtype)) * torch.tanh(x)
        return x

    def bin_mass(self, values: torch.Tensor) -> torch.Tensor:
        """Probability of [v - 1/2, v + 1/2] for values laid out (C, 1, L), stable in both tails."""
        lower = self.logits_cumulative(values - 0.5)
        upper = self.logits_cumulative(values + 0.5)
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood of each element of z (N, C, H, W) under its channel's density."""
        n, c, h, w = z.shape
        flat = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        mass = self.bin_mass(flat).reshape(c, n, h, w).permute(1, 0, 2, 3)
        return mass.clamp_min(LIKELIHOOD_MIN)


def gaussian_likelihood(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Mass of N(0, scale) on [v - 1/2, v + 1/2], v = y - mu; computed on |v| for tail accuracy."""
    scales = scales.clamp_min(SCALE_MIN)
    v = torch.abs(values)
    upper = torch.special.ndtr((0.5 - v) / scales)
    lower = torch.special.ndtr((-0.5 - v) / scales)
    return (upper - lower).clamp_min(LIKELIHOOD_MIN)
