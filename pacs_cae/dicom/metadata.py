"""Every element of a dataset except Pixel Data, as one compact blob, and back.

Why this shape: the archive must return non-pixel attributes exactly as received, so the blob is the
dataset itself in DICOM Part 10 form (file meta included) in the transfer syntax it arrived in, Brotli
compressed. Pixel Data (7FE0,0010) travels separately (the pixel blob); in the metadata it is kept as an
empty placeholder element so that its original VR (OB/OW) survives, and :func:`restore_pixel_data` puts the
bytes back with the right length encoding (undefined length for encapsulated transfer syntaxes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import brotli
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

PIXEL_DATA = Tag(0x7FE0, 0x0010)

#: An encapsulated Pixel Data value with an empty Basic Offset Table and no fragments (PS3.5 A.4).
EMPTY_BOT_ITEM = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"

#: First bytes of every metadata blob, so a wrong blob fails loudly instead of parsing as garbage.
MAGIC = b"PCM1"


class MetadataError(ValueError):
    """The metadata blob is not ours or is damaged."""


@dataclass(frozen=True)
class StoredMetadata:
    """A decoded metadata blob.

    ``dataset`` has no Pixel Data element; ``pixel_vr`` is the VR Pixel Data had when received
    (``None``: the object had no Pixel Data); ``transfer_syntax`` is the received transfer syntax.
    """

    dataset: Dataset
    pixel_vr: str | None
    transfer_syntax: UID


def received_transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax ``ds`` arrived in: its file meta, else the encoding pydicom read it with."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return UID(meta.TransferSyntaxUID)
    encoding = getattr(ds, "original_encoding", (None, None))
    implicit, little = encoding if encoding else (None, None)
    if implicit:
        return ImplicitVRLittleEndian
    if little is False:
        return ExplicitVRBigEndian
    return ExplicitVRLittleEndian


def _file_meta_for(ds: Dataset, transfer_syntax: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    if getattr(ds, "file_meta", None) is not None:
        for elem in ds.file_meta:
            meta.add(elem)
    meta.TransferSyntaxUID = transfer_syntax
    if not meta.get("MediaStorageSOPClassUID") and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if not meta.get("MediaStorageSOPInstanceUID") and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return meta


def _pixel_vr(ds: Dataset) -> str | None:
    if PIXEL_DATA not in ds:
        return None
    vr = ds[PIXEL_DATA].VR
    if vr not in ("OB", "OW"):  # implicit VR "OB or OW": resolved by the bits per sample
        vr = "OW" if int(ds.get("BitsAllocated", 8) or 8) > 8 else "OB"
    return vr


def encode_metadata(ds: Dataset, *, quality: int = 5) -> bytes:
    """Serialise every element of ``ds`` but Pixel Data (Part 10, received transfer syntax, Brotli)."""
    transfer_syntax = received_transfer_syntax(ds)
    out = Dataset()
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset yields elements, decoding raw ones
        if tag != PIXEL_DATA:
            out[tag] = ds.get_item(tag)  # raw elements stay raw: their bytes are written unchanged
    pixel_vr = _pixel_vr(ds)
    if pixel_vr is not None:
        # encapsulated syntaxes need undefined length and at least the (empty) Basic Offset Table item
        encapsulated = transfer_syntax.is_encapsulated
        placeholder = DataElement(PIXEL_DATA, pixel_vr, EMPTY_BOT_ITEM if encapsulated else b"")
        placeholder.is_undefined_length = encapsulated
        out[PIXEL_DATA] = placeholder
    out.file_meta = _file_meta_for(ds, transfer_syntax)
    buffer = io.BytesIO()
    dcmwrite(buffer, out, enforce_file_format=True)
    return MAGIC + brotli.compress(buffer.getvalue(), quality=quality)


def decode_metadata(blob: bytes) -> StoredMetadata:
    """The dataset (with file meta, without Pixel Data) that :func:`encode_metadata` stored."""
    if not blob.startswith(MAGIC):
        raise MetadataError("not a pacs-cae metadata blob")
    try:
        raw = brotli.decompress(blob[len(MAGIC):])
        ds = dcmread(io.BytesIO(raw))
    except Exception as exc:  # brotli.error, InvalidDicomError, struct errors...
        raise MetadataError(f"damaged metadata blob: {exc}") from exc
    pixel_vr = None
    if PIXEL_DATA in ds:
        pixel_vr = ds[PIXEL_DATA].VR
        del ds[PIXEL_DATA]
    dataset = Dataset(ds)
    dataset.file_meta = ds.file_meta
    return StoredMetadata(dataset, pixel_vr, UID(ds.file_meta.TransferSyntaxUID))


def restore_pixel_data(stored: StoredMetadata, pixel_bytes: bytes) -> Dataset:
    """``stored.dataset`` with Pixel Data put back exactly as received (VR, bytes, length encoding)."""
    ds = stored.dataset
    if stored.pixel_vr is None:
        return ds
    elem = DataElement(PIXEL_DATA, stored.pixel_vr, pixel_bytes)
    elem.is_undefined_length = stored.transfer_syntax.is_encapsulated
    ds[PIXEL_DATA] = elem
    return ds


__all__ = [
    "MetadataError",
    "StoredMetadata",
    "decode_metadata",
    "encode_metadata",
    "received_transfer_syntax",
    "restore_pixel_data",
]
