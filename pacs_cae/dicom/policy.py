"""Which instances go through the learned codec, and why the others do not.

The codec was built for single-frame monochrome MR slices of 8-16 bits; everything else is archived
losslessly. The decision only reads header attributes and the transfer syntax against a fixed list
(:data:`CODEC_INPUT_SYNTAXES`), never which optional packages happen to be installed, so the same archive
makes the same decision on every install; the decoders for that list are required dependencies
(:func:`missing_decoders` names any that are absent). A decode that still fails at ingest falls back to
lossless with the reason recorded.
The reason string is recorded with the instance and shown in logs, so it names the attribute that decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian

from pacs_cae.dicom.metadata import received_transfer_syntax
from pacs_cae.dicom.transcode import ACCEPTED_TRANSFER_SYNTAXES
from pacs_cae.dicom.values import integer

ELIGIBLE = "eligible"


class CodecPolicySettings(Protocol):
    """The part of ``pacs_cae.config.CodecSettings`` the policy reads."""

    @property
    def modalities(self) -> Sequence[str]: ...
    @property
    def max_rows(self) -> int: ...
    @property
    def max_columns(self) -> int: ...
    @property
    def min_rows(self) -> int: ...
    @property
    def min_columns(self) -> int: ...


#: Transfer syntaxes whose pixels may go to the learned codec (pydicom decodes each with a required plugin):
#: everything the archive accepts, big endian being normalised on storage.
CODEC_INPUT_SYNTAXES: frozenset[UID] = frozenset(
    s for s in ACCEPTED_TRANSFER_SYNTAXES if s != ExplicitVRBigEndian)


def missing_decoders() -> list[str]:
    """Names of the codec input syntaxes pydicom cannot decode on this install (empty when complete)."""
    from pydicom.pixels import get_decoder

    return sorted(uid.name for uid in CODEC_INPUT_SYNTAXES
                  if uid.is_encapsulated and not get_decoder(uid).is_available)


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    """The attribute's integer (:func:`pacs_cae.dicom.values.integer`), ``default`` when it is absent."""
    return integer(ds, keyword) if keyword in ds else default


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
    if transfer_syntax not in CODEC_INPUT_SYNTAXES:
        return False, f"transfer syntax {transfer_syntax} is not a codec input syntax"
    return True, ELIGIBLE


__all__ = ["CODEC_INPUT_SYNTAXES", "ELIGIBLE", "CodecPolicySettings", "check_eligibility", "missing_decoders"]
