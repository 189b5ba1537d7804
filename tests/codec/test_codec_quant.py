"""Eq. 2 / Eq. 3 quantization: error bounds, per-slice ranges, the constant-latent case."""

from __future__ import annotations

import torch

from pacs_cae.codec.quant import dequantize, quantize


def _latent(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(3, 512, 2, 2, generator=g)
    scale = torch.tensor([1.0, 0.01, 40.0]).reshape(3, 1, 1, 1)
    offset = torch.tensor([0.0, 5.0, -3.0]).reshape(3, 1, 1, 1)
    return z * scale + offset  # three slices with very different ranges


def test_round_trip_error_within_half_a_step_per_slice() -> None:
    z = _latent()
    q = quantize(z)
    assert q.codes.dtype == torch.uint8 and q.codes.shape == z.shape
    back = dequantize(q.codes, q.minimum, q.maximum)
    step = (q.maximum - q.minimum) / 255
    err = (back - z).abs().reshape(3, -1).amax(dim=1)
    # Half a step, plus float32 rounding of values of this magnitude (a few ulps).
    ulps = 4 * torch.finfo(torch.float32).eps * z.abs().reshape(3, -1).amax(dim=1)
    assert torch.all(err <= step / 2 + ulps), (err, step / 2)
    # Every slice uses its own range, so the codes span 0..255 for each.
    assert q.codes.reshape(3, -1).amin(dim=1).tolist() == [0, 0, 0]
    assert q.codes.reshape(3, -1).amax(dim=1).tolist() == [255, 255, 255]


def test_min_max_are_the_latents_own() -> None:
    z = _latent(1)
    q = quantize(z)
    assert torch.equal(q.minimum, z.reshape(3, -1).amin(dim=1))
    assert torch.equal(q.maximum, z.reshape(3, -1).amax(dim=1))


def test_literal_floor_rounding_is_within_one_step() -> None:
    z = _latent(2)
    q = quantize(z, rounding="floor")
    back = dequantize(q.codes, q.minimum, q.maximum)
    step = ((q.maximum - q.minimum) / 255).reshape(3, 1, 1, 1)
    ulps = 4 * torch.finfo(torch.float32).eps * z.abs().reshape(3, -1).amax(dim=1).reshape(3, 1, 1, 1)
    assert torch.all(z - back >= -ulps)  # floor never rounds up
    assert torch.all(z - back <= step + ulps)
    nearest = dequantize(*vars(quantize(z)).values())
    assert (nearest - z).abs().mean() < (back - z).abs().mean()


def test_constant_latent_restores_the_constant() -> None:
    z = torch.full((2, 512, 1, 1), 0.75)
    z[1] = -2.5
    q = quantize(z)
    assert torch.count_nonzero(q.codes) == 0
    assert torch.equal(dequantize(q.codes, q.minimum, q.maximum), z)
    assert torch.isfinite(dequantize(q.codes, q.minimum, q.maximum)).all()
