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
