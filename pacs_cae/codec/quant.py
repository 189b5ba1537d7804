"""Latent quantization, the paper's Eq. 2 and Eq. 3, applied per slice.

Eq. 2 rescales each slice's latent to 0..255 with the latent's own min and max and stores uint8;
Eq. 3 maps the codes back with the stored min and max. Two choices the paper leaves open:

* Rounding. Eq. 2 writes a floor; ``rounding="nearest"`` (the default) rounds to the nearest code instead,
  which halves the worst-case error to (max - min) / 255 / 2 and removes the floor's downward bias, for the
  same number of bits. ``rounding="floor"`` is the literal formula (error below one step).
* A constant latent (max == min) has no range to rescale: every code is 0 and Eq. 3 restores the constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

LEVELS = 255
Rounding = Literal["nearest", "floor"]


@dataclass(frozen=True)
class QuantizedLatent:
    """uint8 codes (N, C, h, w) with each slice's latent min and max (float32, shape (N,))."""

    codes: torch.Tensor
    minimum: torch.Tensor
    maximum: torch.Tensor


def quantize(latent: torch.Tensor, rounding: Rounding = "nearest") -> QuantizedLatent:
    """Eq. 2 per slice: (N, ...) float latent -> uint8 codes plus per-slice min/max (computed in float32)."""
    z = latent.float()
    flat = z.reshape(z.shape[0], -1)
    lo = flat.amin(dim=1)
    hi = flat.amax(dim=1)
    span = hi - lo
    # A constant slice has span 0: scale 0 maps everything to code 0 instead of dividing by zero.
    scale = torch.where(span > 0, LEVELS / torch.where(span > 0, span, torch.ones_like(span)), 0.0)
    shape = (-1,) + (1,) * (z.dim() - 1)
    scaled = (z - lo.reshape(shape)) * scale.reshape(shape)
    scaled = torch.round(scaled) if rounding == "nearest" else torch.floor(scaled)
    codes = scaled.clamp_(0, LEVELS).to(torch.uint8)
    return QuantizedLatent(codes=codes, minimum=lo, maximum=hi)


def dequantize(codes: torch.Tensor, minimum: torch.Tensor, maximum: torch.Tensor) -> torch.Tensor:
    """Eq. 3 per slice: uint8 codes (N, ...) and per-slice min/max (N,) -> float32 latent."""
    lo = minimum.float().to(codes.device)
    hi = maximum.float().to(codes.device)
    shape = (-1,) + (1,) * (codes.dim() - 1)
    return codes.float() / LEVELS * (hi - lo).reshape(shape) + lo.reshape(shape)
