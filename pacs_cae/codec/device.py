"""Device choice: ``auto`` means CUDA when this torch build sees a GPU, else CPU."""

from __future__ import annotations

import torch

from .errors import CodecError


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable ``torch.device``.

    Forcing CUDA on a machine without it is an error rather than a silent CPU fallback, so a misconfigured
    GPU host is noticed.
    """
    if isinstance(spec, torch.device):
        device = spec
    elif spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(spec)
        except RuntimeError as exc:
            raise CodecError(f"invalid device {spec!r}: use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CodecError(f"device {spec!r} requested but this torch build sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise CodecError(f"unsupported device {spec!r}: use auto, cpu or cuda[:N]")
    return device


#: Slices per forward pass when ``codec.batch_size`` is 0 (auto), by device type. On the CPU one slice per
#: forward is the fastest: on this project's 2-core AVX-512-BF16 CPU batch 1 encoded and decoded 1.2-1.5x
#: faster than batch 8 (the codec rates of benchmarks/archive_throughput.py, ad hoc). A GPU needs batches
#: to fill it; 8 is the former default there, not measured on a GPU by this project.
AUTO_FORWARD_BATCH = {"cpu": 1, "cuda": 8}


def forward_batch(batch_size: int, device: torch.device) -> int:
    """Slices per encoder/decoder forward: ``batch_size``, or for 0 the device's :data:`AUTO_FORWARD_BATCH`."""
    if batch_size < 0:
        raise ValueError("batch_size must be >= 0 (0 = per device)")
    return batch_size or AUTO_FORWARD_BATCH.get(device.type, 1)
