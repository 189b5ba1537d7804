"""Store one received dataset: validate, choose the pixel path, measure, commit.

Order matters for durability and for the network layer: everything that can fail because of the data
(validation, metadata serialisation, codec, quality gate) happens before the database transaction; the
transaction writes the index rows, the metadata blob and the pixel blob together, and only after it
committed does :func:`ingest` return a :class:`StoreOutcome` (C-STORE answers 0x0000 on that).

Pixel paths:

* ``cae`` - eligible by :mod:`pacs_cae.dicom.policy`, encoded by the learned codec, and (with
  ``codec.gate``) decoded again and measured: PSNR with R = max - min of the original slice, and the
  maximum absolute error. A slice below ``codec.min_psnr_db`` or above ``codec.max_abs_error`` is stored
  losslessly instead, with ``fallback_reason`` "quality-gate: ..." and a warning log line.
  With ``codec.require_gain`` the CAE blob is kept only when it is smaller than the slice's lossless
  encoding (fallback_reason "no-gain: ..."): a lossy copy that saves no space is never stored.
* ``lossless`` - everything else with Pixel Data, byte-exact (:mod:`pacs_cae.codec.lossless`).
* ``none`` - objects without Pixel Data (SR, presentation states, ...): the metadata blob is the object.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy.exc import SQLAlchemyError

from pacs_cae.archive.errors import CannotUnderstand, DataSetMismatch, OutOfResources
from pacs_cae.codec.lossless import PixelLayout, encode_lossless
from pacs_cae.config import Settings
from pacs_cae.dicom.metadata import encode_metadata, received_transfer_syntax
from pacs_cae.dicom.pixels import extract_frames
from pacs_cae.dicom.policy import check_eligibility
from pacs_cae.dicom.rebuild import served_sop_instance_uid
from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.store.db import Database
from pacs_cae.store.record import InstanceRecord, InvalidRecord
from pacs_cae.store.repository import QUALITY_GATE_REASON, upsert_instance

LOG = logging.getLogger(__name__)

#: CannotUnderstand sub-codes (PS3.4 leaves the low 12 bits of 0xCxxx to the implementation).
STATUS_MISSING_ATTRIBUTE = 0xC001
STATUS_UNENCODABLE = 0xC002

#: ``fallback_reason`` prefix when the CAE blob is not smaller than the lossless encoding (codec.require_gain).
NO_GAIN_REASON = "no-gain"

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class Encoder(Protocol):
    """What ingest needs from a ``Codec`` or ``BatchingCodec``."""

    model_id: str
    weights_sha256: str

    def encode(self, slices: Sequence[np.ndarray], *, bits_stored: Any = None, quality: Any = None) -> list[bytes]: ...
    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class StoreOutcome:
    """What was committed for one instance.

    With ``result == "kept-first"`` (duplicate policy keep-first) nothing was written: the fields describe
    how the re-sent copy would have been stored; the first copy stays as it was.
    """

    sop_instance_uid: str
    sop_class_uid: str
    served_sop_instance_uid: str  # the UID C-FIND answers and C-GET/C-MOVE deliver
    storage: str  # "cae" | "lossless" | "none"
    result: str  # "stored" | "replaced" | "kept-first"
    codec_model_id: str | None
    fallback_reason: str | None
    psnr_db: float | None  # measured by the quality gate (cae path with the gate on)
    max_abs_error: float | None
    original_pixel_bytes: int
    stored_pixel_bytes: int
    metadata_bytes: int


@dataclass(frozen=True)
class GateResult:
    """The quality gate's measurement; ``reason`` is None when the slice passes."""

    psnr_db: float
    max_abs_error: float
    reason: str | None


def measure(original: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(PSNR dB with R = max - min of the original, max absolute error); PSNR is inf when exact."""
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(decoded, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"decoded shape {b.shape} differs from the original {a.shape}")
    diff = a - b
    mse = float(np.mean(diff * diff))
    max_err = float(np.max(np.abs(diff))) if diff.size else 0.0
    if mse == 0.0:
        return math.inf, max_err
    value_range = float(a.max() - a.min())
    if value_range == 0.0:
        return -math.inf, max_err
    return 10.0 * math.log10(value_range * value_range / mse), max_err


def quality_gate(original: np.ndarray, decoded: np.ndarray, min_psnr_db: float | None,
                 max_abs_error: float | None) -> GateResult:
    """Compare a decoded slice with the original against the configured floor."""
    psnr, max_err = measure(original, decoded)
    reasons = []
    if min_psnr_db is not None and psnr < min_psnr_db:
        reasons.append(f"PSNR {psnr:.2f} dB < min_psnr_db {min_psnr_db:g}")
    if max_abs_error is not None and max_err > max_abs_error:
        reasons.append(f"max abs error {max_err:g} > max_abs_error {max_abs_error:g}")
    reason = f"{QUALITY_GATE_REASON}: " + "; ".join(reasons) if reasons else None
    return GateResult(psnr, max_err, reason)


def validate(ds: Dataset, affected_sop_class: str | None = None,
             affected_sop_instance: str | None = None) -> None:
    """Raise the ArchiveError the C-STORE must answer for a dataset the archive cannot take."""
    for keyword in REQUIRED_UIDS:
        try:
            value = str(ds.get(keyword, "") or "").strip()
        except Exception as exc:  # an element pydicom cannot convert
            raise CannotUnderstand(f"{keyword} cannot be parsed: {exc}", STATUS_MISSING_ATTRIBUTE) from exc
        if not value:
            raise CannotUnderstand(f"required attribute {keyword} is missing or empty", STATUS_MISSING_ATTRIBUTE)
    sop_class, sop_instance = str(ds.SOPClassUID).strip(), str(ds.SOPInstanceUID).strip()
    if affected_sop_class and sop_class != str(affected_sop_class).strip():
        raise DataSetMismatch(f"SOP Class UID {sop_class} does not match the request's {affected_sop_class}")
    if affected_sop_instance and sop_instance != str(affected_sop_instance).strip():
        raise DataSetMismatch(
            f"SOP Instance UID {sop_instance} does not match the request's {affected_sop_instance}")


def _layout(ds: Dataset) -> PixelLayout | None:
    """Native pixel layout for the lossless codec; None (plain Brotli) for encapsulated or odd data."""
    ts = received_transfer_syntax(ds)
    if ts.is_encapsulated or not ts.is_little_endian:
        return None
    try:
        return PixelLayout(
            rows=int(ds.Rows), columns=int(ds.Columns), bits_allocated=int(ds.BitsAllocated),
            pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
            frames=int(ds.get("NumberOfFrames", 1) or 1),
        )
    except (AttributeError, TypeError, ValueError):
        return None


def _architecture(encoder: Any) -> str:
    codec = getattr(encoder, "codec", encoder)
    card = getattr(codec, "card", None)
    return str(getattr(card, "architecture", "") or "")


@dataclass(frozen=True)
class _Pixels:
    storage: str
    blob: bytes | None
    fallback_reason: str | None = None
    psnr_db: float | None = None
    max_abs_error: float | None = None


def _cae_path(ds: Dataset, settings: Settings, encoder: Encoder) -> _Pixels | str:
    """The CAE blob, or a fallback reason string when the slice must go lossless."""
    codec = settings.codec
    try:
        pixels = extract_frames(ds)
        frame = pixels.frames[0]
        options = {} if codec.quality is None else {"quality": codec.quality}
        blob = encoder.encode([frame], bits_stored=pixels.bits_stored, **options)[0]
    except Exception as exc:  # pixel decode or codec failure: archive losslessly, never refuse the data
        return f"codec-error: {type(exc).__name__}: {exc}"
    if not codec.gate or (codec.min_psnr_db is None and codec.max_abs_error is None):
        return _Pixels("cae", blob)
    try:
        decoded = encoder.decode([blob])[0]
        gate = quality_gate(frame, decoded, codec.min_psnr_db, codec.max_abs_error)
    except Exception as exc:
        return f"{QUALITY_GATE_REASON}: verification decode failed: {type(exc).__name__}: {exc}"
    if gate.reason:
        return gate.reason
    return _Pixels("cae", blob, psnr_db=gate.psnr_db, max_abs_error=gate.max_abs_error)


def _choose_pixels(ds: Dataset, settings: Settings, encoder: Encoder | None) -> _Pixels:
    if "PixelData" not in ds:
        return _Pixels("none", None)
    eligible, why = check_eligibility(ds, settings.codec)
    fallback = None
    if eligible and encoder is None:
        eligible, why = False, "no codec model loaded"
    lossless: bytes | None = None
    if eligible:
        assert encoder is not None
        chosen = _cae_path(ds, settings, encoder)
        if isinstance(chosen, _Pixels) and settings.codec.require_gain:
            # A lossy copy that saves nothing is all loss: keep the exact pixels instead.
            lossless = _lossless_blob(ds, settings)
            if chosen.blob is not None and len(chosen.blob) >= len(lossless):
                chosen = f"{NO_GAIN_REASON}: CAE blob {len(chosen.blob)} bytes >= lossless {len(lossless)} bytes"
        if isinstance(chosen, _Pixels):
            return chosen
        fallback = chosen
        LOG.warning("instance %s stored losslessly instead of by the CAE: %s", ds.SOPInstanceUID, fallback)
    else:
        LOG.debug("instance %s stored losslessly: %s", ds.SOPInstanceUID, why)
    if lossless is None:
        lossless = _lossless_blob(ds, settings)
    return _Pixels("lossless", lossless, fallback_reason=fallback)


def _lossless_blob(ds: Dataset, settings: Settings) -> bytes:
    return encode_lossless(ds.PixelData, _layout(ds), brotli_quality=settings.codec.brotli_quality)


def ingest(ds: Dataset, *, settings: Settings, database: Database, encoder: Encoder | None,
           calling_aet: str = "", affected_sop_class: str | None = None,
           affected_sop_instance: str | None = None) -> StoreOutcome:
    """Archive ``ds``; returns only after the transaction holding it committed (raises ArchiveError)."""
    validate(ds, affected_sop_class, affected_sop_instance)
    try:
        metadata_blob = encode_metadata(ds, quality=settings.codec.brotli_quality)
    except Exception as exc:
        raise CannotUnderstand(f"data set cannot be encoded: {exc}", STATUS_UNENCODABLE) from exc
    try:
        pixels = _choose_pixels(ds, settings, encoder)
        original_bytes = len(ds.PixelData) if "PixelData" in ds else 0
    except Exception as exc:
        raise CannotUnderstand(f"Pixel Data cannot be read: {exc}", STATUS_UNENCODABLE) from exc

    sop_instance = str(ds.SOPInstanceUID).strip()
    storage: dict[str, Any] = {
        "storage": pixels.storage,
        "fallback_reason": pixels.fallback_reason,
        "original_pixel_bytes": original_bytes,
        "calling_aet": calling_aet,
    }
    served = sop_instance
    if pixels.storage == "cae":
        assert encoder is not None
        storage.update(
            derived_sop_instance_uid=str(derive_lossy_uid(sop_instance, encoder.model_id)),
            codec_model_id=encoder.model_id,
            codec_sha256=encoder.weights_sha256,
            codec_architecture=_architecture(encoder),
        )
        served = served_sop_instance_uid(sop_instance, encoder.model_id, settings.codec.lossy_uid)
    try:
        record = InstanceRecord.from_dataset(ds, **storage)
    except InvalidRecord as exc:
        raise CannotUnderstand(str(exc), STATUS_MISSING_ATTRIBUTE) from exc

    try:
        with database.session() as session:
            result = upsert_instance(session, record, metadata_blob, pixels.blob,
                                     settings.server.duplicate_policy)  # type: ignore[arg-type]
    except SQLAlchemyError as exc:
        LOG.error("instance %s not stored, database error: %s", sop_instance, exc)
        raise OutOfResources(f"database error: {type(exc).__name__}") from exc
    except OSError as exc:
        LOG.error("instance %s not stored: %s", sop_instance, exc)
        raise OutOfResources(str(exc)) from exc

    LOG.info("stored %s (%s, %s) from %r as %s%s", sop_instance, record.modality or "-", result,
             calling_aet, pixels.storage,
             f" [{pixels.fallback_reason}]" if pixels.fallback_reason else "")
    return StoreOutcome(
        sop_instance_uid=sop_instance,
        sop_class_uid=record.sop_class_uid,
        served_sop_instance_uid=served,
        storage=pixels.storage,
        result=result,
        codec_model_id=record.codec_model_id,
        fallback_reason=pixels.fallback_reason,
        psnr_db=pixels.psnr_db,
        max_abs_error=pixels.max_abs_error,
        original_pixel_bytes=original_bytes,
        stored_pixel_bytes=len(pixels.blob) if pixels.blob is not None else 0,
        metadata_bytes=len(metadata_blob),
    )


__all__ = ["Encoder", "GateResult", "StoreOutcome", "ingest", "measure", "quality_gate", "validate"]
