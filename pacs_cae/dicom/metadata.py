"""Every element of a dataset except Pixel Data, as one compact blob, and back.

Why this shape: the archive must return non-pixel attributes exactly as received, so the blob is the
dataset itself in DICOM Part 10 form (file meta included) in the transfer syntax it arrived in, Brotli
compressed. Pixel Data (7FE0,0010) travels separately (the pixel blob); in the metadata it is kept as an
empty placeholder element so that its original VR (OB/OW) survives, and :func:`restore_pixel_data` puts the
bytes back with the right length encoding (undefined length for encapsulated transfer syntaxes).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import brotli
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

if TYPE_CHECKING:
    from pacs_cae.dicom.integrity import EncodedDataSet

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


def encode_metadata(ds: Dataset, *, quality: int = 5, encoded: EncodedDataSet | None = None) -> bytes:
    """Serialise every element of ``ds`` but Pixel Data (Part 10, received transfer syntax, Brotli).

    ``encoded`` (the data set's bytes as received, C-STORE): the elements are copied as received, Pixel Data
    cut out, instead of being written again by pydicom (which costs more than the rest of a C-STORE); the
    blob decodes to the same data set. Falls back to pydicom's writer where splicing is not plainly right.
    """
    spliced = _spliced(ds, encoded) if encoded is not None else None
    if spliced is not None:
        return MAGIC + brotli.compress(spliced, quality=quality)
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


def _spliced(ds: Dataset, encoded: EncodedDataSet) -> bytes | None:
    """The Part 10 bytes of :func:`encode_metadata` from the received encoding; None where it does not apply.

    Only for native little-endian syntaxes whose encoding matches the stream, without group length elements
    (their values would no longer add up once Pixel Data is cut out; pydicom's writer drops them).
    """
    transfer_syntax = received_transfer_syntax(ds)
    if (transfer_syntax.is_encapsulated or transfer_syntax.is_deflated or not transfer_syntax.is_little_endian
            or not encoded.little_endian or encoded.implicit_vr != transfer_syntax.is_implicit_VR):
        return None
    from pacs_cae.dicom.integrity import top_level_elements  # integrity imports this module

    try:
        spans = top_level_elements(encoded)
    except ValueError:
        return None
    if any(tag & 0xFFFF == 0 for tag, _, _ in spans):
        return None
    data = encoded.data
    parts: list[bytes | memoryview] = []
    at = 0
    for tag, start, end in spans:
        if tag == PIXEL_DATA:
            vr = _pixel_vr(ds) or "OW"
            placeholder = (struct.pack("<HH", 0x7FE0, 0x0010) + (b"\0\0\0\0" if encoded.implicit_vr else
                           vr.encode() + b"\0\0\0\0\0\0"))
            parts += [memoryview(data)[at:start], placeholder]
            at = end
    parts.append(memoryview(data)[at:])
    buffer = DicomBytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    meta = _file_meta_for(ds, transfer_syntax)
    for meta_keyword, keyword in (("MediaStorageSOPClassUID", "SOPClassUID"),
                                  ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
        if ds.get(keyword) and meta.get(meta_keyword) != ds.get(keyword):  # as dcmwrite keeps them up to date
            setattr(meta, meta_keyword, ds.get(keyword))
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue() + b"".join(parts)


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
    # keep the encoding the elements were read in: pydicom then writes them back as they are, instead of
    # parsing every element to re-encode it (the copy above starts with none: a third of a retrieve's CPU)
    implicit_vr, little_endian = ds.original_encoding
    dataset.set_original_encoding(implicit_vr, little_endian, ds.original_character_set)
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
