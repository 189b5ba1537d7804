"""GDN (Balle et al. 2016), the nonlinearity of the analysis/synthesis transforms.

``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)`` (inverse GDN multiplies instead). beta and gamma are kept
non-negative by a squared reparameterisation with a small floor; computed in float32 even under bf16
autocast, because the normalisation divides by a sum of squares.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_PEDESTAL = 2.0**-18


class GDN(nn.Module):
    """Generalised divisive normalisation over channels (``inverse=True``: IGDN, for synthesis)."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.beta_floor = (beta_min + _PEDESTAL) ** 0.5
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + _PEDESTAL))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + _PEDESTAL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        work = torch.float64 if dtype == torch.float64 else torch.float32
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(work)
            beta = self.beta.to(work).clamp_min(self.beta_floor) ** 2 - _PEDESTAL
            gamma = self.gamma.to(work).clamp_min(_PEDESTAL**0.5) ** 2 - _PEDESTAL
            c = gamma.shape[0]
            norm = F.conv2d(x * x, gamma.reshape(c, c, 1, 1), beta)
            norm = torch.sqrt(norm) if self.inverse else torch.rsqrt(norm)
            return (x * norm).to(dtype)


def conv(in_ch: int, out_ch: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    """'same'-padded convolution that divides the size by ``stride``."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)


def deconv(in_ch: int, out_ch: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """Transposed convolution that multiplies the size by ``stride`` exactly."""
    return nn.ConvTranspose2d(
        in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1
    )
