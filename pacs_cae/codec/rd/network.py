"""The mean-scale hyperprior network (Minnen et al. 2018) with gain units (Cui et al. 2021).

Sizes for a 512x512 slice: ``y`` is (M, 32, 32) (stride 16), ``z`` is (N, 8, 8) (stride 64), so inputs are
padded to a multiple of :data:`DOWNSCALE`. Kernels are 3x3 at the two highest resolutions and 5x5 below,
which keeps a 512x512 slice at ~1.5 GMAC per transform -- fast on two CPU cores; ``h_s`` (run in float64 by
the codec) is ~24 MMAC.

One network serves every operating point: quality ``q`` selects a learned per-channel gain that scales ``y``
before rounding (finer steps for higher quality) and its inverse gain after, and training samples ``q`` (and
so lambda) per crop. ``h_a`` sees the gained ``y``, so ``z`` carries the operating point to ``h_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .layers import GDN, conv, deconv
from .priors import SCALE_MIN, FactorizedPrior, gaussian_likelihood

#: Total stride of analysis + hyper-analysis: slice height and width are padded to a multiple of this.
DOWNSCALE = 64


@dataclass(frozen=True)
class RDConfig:
    """Architecture hyper-parameters (stored in the model card, so a card rebuilds its network)."""

    channels: int = 64  # N: transform and hyper channels
    latent_channels: int = 96  # M: channels of y
    #: lambda of each quality level (loss = bpp + lambda * 4095^2 * MSE on [0, 1] slices), low to high.
    lambdas: tuple[float, ...] = (0.004, 0.0104, 0.027, 0.07, 0.183, 0.475, 1.24, 3.2)

    @property
    def qualities(self) -> int:
        return len(self.lambdas)


def entropy_parameters(h_s: nn.Module, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantized z -> (means, scales) of y; scales >= SCALE_MIN. The codec runs this with a float64 copy."""
    means, raw = h_s(z_hat).chunk(2, dim=1)
    return means, SCALE_MIN + nn.functional.softplus(raw)


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round forward, identity backward."""
    return x + (torch.round(x) - x).detach()


class MeanScaleHyperprior(nn.Module):
    """Transforms, hyperprior, factorized prior for ``z`` and gain units; ``forward`` is the training path."""

    def __init__(self, config: RDConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or RDConfig()
        n, m = cfg.channels, cfg.latent_channels
        self.g_a = nn.Sequential(
            conv(1, n, 3), GDN(n), conv(n, n, 3), GDN(n), conv(n, n, 5), GDN(n), conv(n, m, 5)
        )
        self.g_s = nn.Sequential(
            deconv(m, n, 5), GDN(n, inverse=True), deconv(n, n, 5), GDN(n, inverse=True),
            deconv(n, n, 3), GDN(n, inverse=True), deconv(n, 1, 3),
        )
        self.h_a = nn.Sequential(
            conv(m, n, 3, 1), nn.ReLU(), conv(n, n, 5), nn.ReLU(), conv(n, n, 5)
        )
        # small on purpose: the codec runs h_s in float64 (exact decoding), where convolutions are slow
        self.h_s = nn.Sequential(
            deconv(n, n, 3), nn.ReLU(), deconv(n, n, 3), nn.ReLU(), conv(n, 2 * m, 1, 1)
        )
        self.z_prior = FactorizedPrior(n)
        # log-gains, initialised to the high-rate optimum gain ~ sqrt(lambda) relative to the middle level
        mid = math.sqrt(cfg.lambdas[0] * cfg.lambdas[-1])
        init = torch.tensor([0.5 * math.log(lam / mid) for lam in cfg.lambdas])[:, None].repeat(1, m)
        self.log_gain = nn.Parameter(init.clone())
        self.log_inverse_gain = nn.Parameter(-init.clone())

    # ---------------------------------------------------------------- pieces (shared by training and codec)
    def gain(self, quality_index: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """(B,) level indices -> (B, M, 1, 1) gains."""
        table = self.log_inverse_gain if inverse else self.log_gain
        return torch.exp(table[quality_index])[:, :, None, None]

    def analysis(self, x: torch.Tensor, quality_index: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] (B, 1, H, W) -> gained latent y (B, M, H/16, W/16)."""
        y = self.g_a(x - 0.5)
        return y * self.gain(quality_index).to(y.dtype)

    def synthesis(self, y_hat: torch.Tensor, quality_index: torch.Tensor) -> torch.Tensor:
        y = y_hat * self.gain(quality_index, inverse=True).to(y_hat.dtype)
        return self.g_s(y) + 0.5

    def entropy_parameters(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return entropy_parameters(self.h_s, z_hat)

    # ---------------------------------------------------------------- training
    def forward(self, x: torch.Tensor, quality_index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Noisy-rate / rounded-reconstruction pass: x_hat, and bits of y and z per sample."""
        y = self.analysis(x, quality_index)
        z = self.h_a(y)
        z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        z_bits = -torch.log2(self.z_prior(z_noisy.float())).sum(dim=(1, 2, 3))
        means, scales = self.entropy_parameters(_ste_round(z))
        residual = y - means
        noisy = residual + torch.empty_like(residual).uniform_(-0.5, 0.5)
        y_bits = -torch.log2(gaussian_likelihood(noisy.float(), scales.float())).sum(dim=(1, 2, 3))
        y_hat = _ste_round(residual) + means
        x_hat = self.synthesis(y_hat, quality_index)
        return {"x_hat": x_hat, "y_bits": y_bits, "z_bits": z_bits}


def build_rd_model(config: RDConfig | None = None) -> MeanScaleHyperprior:
    return MeanScaleHyperprior(config)
