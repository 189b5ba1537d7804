"""Which instances go through the learned codec, and why the others do not.

The codec was built for single-frame monochrome MR slices of 8-16 bits; everything else is archived
losslessly. The decision only reads header attributes and asks pydicom whether it has a decoder for the
transfer syntax, so it is cheap; a decode that still fails at ingest falls back to lossless as well.
The reason string is recorded with the instance and shown in logs, so it names the attribute that decided.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from pydicom.dataset import Dataset
from pydicom.uid import UID

from pacs_cae.dicom.metadata import received_transfer_syntax

ELIGIBLE = "eligible"


class CodecPolicySettings(Protocol):
    """The part of ``pacs_cae.config.CodecSettings`` the policy reads."""

    modalities: Sequence[str]
    max_rows: int
    max_columns: int
    min_rows: int
    min_columns: int


def _decodable(transfer_syntax: UID) -> bool:
    if not transfer_syntax.is_encapsulated:
        return transfer_syntax.is_transfer_syntax
    try:
        from pydicom.pixels import get_decoder

        return get_decoder(transfer_syntax).is_available
    except (NotImplementedError, ValueError):
        return False


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    value = ds.get(keyword, default)
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def check_eligibility(ds: Dataset, settings: CodecPolicySettings) -> tuple[bool, str]:
    """``(True, "eligible")`` when ``ds`` may be CAE-encoded, else ``(False, reason)``."""
    if "PixelData" not in ds:
        return False, "no Pixel Data (non-image object)"
    modality = str(ds.get("Modality", "") or "")
    allowed = [m.upper() for m in settings.modalities]
    if modality.upper() not in allowed:
        return False, f"Modality {modality or '(none)'} not in codec.modalities {allowed}"
    samples = _int(ds, "SamplesPerPixel", 1)
    if samples != 1:
        return False, f"SamplesPerPixel {samples} (codec takes one sample per pixel)"
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return False, f"PhotometricInterpretation {photometric or '(none)'} is not MONOCHROME1/2"
    bits_allocated = _int(ds, "BitsAllocated")
    if bits_allocated not in (8, 16):
        return False, f"BitsAllocated {bits_allocated} (codec takes 8 or 16)"
    bits_stored = _int(ds, "BitsStored", bits_allocated)
    if bits_stored is None or not 1 <= bits_stored <= bits_allocated:
        return False, f"BitsStored {bits_stored} does not fit BitsAllocated {bits_allocated}"
    if _int(ds, "PixelRepresentation", 0) not in (0, 1):
        return False, f"PixelRepresentation {ds.get('PixelRepresentation')} is not 0 or 1"
    frames = _int(ds, "NumberOfFrames", 1) or 1
    if frames != 1:
        return False, f"NumberOfFrames {frames} (codec takes single-frame instances)"
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if rows is None or columns is None:
        return False, "Rows/Columns missing"
    if not settings.min_rows <= rows <= settings.max_rows:
        return False, f"Rows {rows} outside codec.min_rows..max_rows {settings.min_rows}..{settings.max_rows}"
    if not settings.min_columns <= columns <= settings.max_columns:
        return False, (f"Columns {columns} outside codec.min_columns..max_columns "
                       f"{settings.min_columns}..{settings.max_columns}")
    transfer_syntax = received_transfer_syntax(ds)
    if not transfer_syntax.is_little_endian:
        return False, f"big endian transfer syntax {transfer_syntax} (retired; kept as received)"
    if not _decodable(transfer_syntax):
        return False, f"no pydicom decoder available for transfer syntax {transfer_syntax}"
    return True, ELIGIBLE


__all__ = ["ELIGIBLE", "CodecPolicySettings", "check_eligibility"]
