"""The dataset the archive serves, rebuilt from the stored metadata and the decoded pixels.

Lossless instances come back exactly as received: same transfer syntax, every element equal, the same
Pixel Data bytes. CAE instances come back as uncompressed Explicit VR Little Endian in the original
BitsAllocated/BitsStored/HighBit/PixelRepresentation, and declare the lossy step honestly (PS3.3
C.7.6.1.1.5, C.7.6.1.1.3, C.12.4.1.2):

* Lossy Image Compression (0028,2110) "01"; Lossy Image Compression Ratio (0028,2112) = uncompressed
  Pixel Data bits / stored blob bits; Lossy Image Compression Method (0028,2114) = :data:`LOSSY_METHOD`.
  If the received image had already been lossy compressed, ratio and method are appended (the values are
  ordered, one per lossy step; both always carry the same number of values, a received ratio without a
  method gets its syntax's method, e.g. ISO_15444_1, see :func:`pacs_cae.dicom.transcode.aligned_lossy_history`).
* Image Type value 1 DERIVED; Derivation Description and Derivation Code Sequence (DCM 113040) appended;
  the description names the model and, for a blob made under an error bound, "max abs error <= δ".
* Source Image Sequence gets an item pointing to the received SOP Class/Instance UID with purpose
  DCM 121320 "Uncompressed predecessor".
* A new SOP Instance UID (also Media Storage SOP Instance UID) derived by
  :func:`pacs_cae.dicom.uids.derive_lossy_uid` when ``lossy_uid == "derive"``; with ``"keep"`` (a
  non-conformant site option) the UID stays and no Source Image Sequence item is added, as it would
  reference the instance itself.

Lossy Image Compression Method: the defined terms (ISO_10918_1, ISO_14495_1, ISO_15444_1, ISO_15444_2,
ISO_13818_2, ISO_14496_10, ISO_23008_2, ISO_15444_15) all name standard codecs, none fits a learned
autoencoder; defined terms may be extended, and the value is a CS (upper case, digits, "_", at most 16
characters), so "PACS_CAE_CAE_PAPER" (18 characters) is not valid and :data:`LOSSY_METHOD` is "PACS_CAE".
The model id and weight hash go in Derivation Description.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from pacs_cae.codec.normalize import value_range
from pacs_cae.dicom.metadata import PIXEL_DATA, StoredMetadata, restore_pixel_data
from pacs_cae.dicom.pixels import frames_to_pixel_data
from pacs_cae.dicom.transcode import aligned_lossy_history, declare_received_loss
from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.vocabulary import LossyUidPolicy

#: Lossy Image Compression Method (0028,2114) value for the learned codec (CS, max 16 characters).
LOSSY_METHOD = "PACS_CAE"
#: Derivation Code (CID 7203): DCM 113040 "Lossy Compression".
LOSSY_COMPRESSION_CODE = ("113040", "DCM", "Lossy Compression")
#: Purpose of Reference (CID 7202): DCM 121320 "Uncompressed predecessor".
UNCOMPRESSED_PREDECESSOR_CODE = ("121320", "DCM", "Uncompressed predecessor")

_ENCAPSULATION_ONLY = (0x7FE00001, 0x7FE00002)  # Extended Offset Table (+ Lengths)
_DERIVATION_DESCRIPTION_MAX = 1024  # ST


@dataclass(frozen=True)
class LossySource:
    """What the served lossy copy declares about the codec step."""

    model_id: str
    blob_bytes: int
    weights_sha256: str = ""
    lossy_uid: str = LossyUidPolicy.DERIVE
    received_syntax: str = ""  # the transfer syntax the instance arrived in
    received_pixel_bytes: int = 0  # its Pixel Data length as received (the codestream, if compressed)
    max_abs_error: int | None = None  # the error bound the blob guarantees (its header), None: none
    derived_uid: str | None = None  # the copy's UID as stored when it was compressed (else derived here)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _values(ds: Dataset, keyword: str) -> list:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def compression_ratio(ds: Dataset, blob_bytes: int) -> float:
    """Uncompressed Pixel Data bits (as BitsAllocated) over the stored blob's bits."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames * int(ds.BitsAllocated)
    return bits / max(1, 8 * blob_bytes)


def served_sop_instance_uid(original_uid: str, model_id: str, lossy_uid: str = LossyUidPolicy.DERIVE,
                            derived_uid: str | None = None) -> str:
    """The SOP Instance UID a CAE instance is served (and answered in C-FIND) with: ``derived_uid`` (the one
    stored with the compressed copy) when given, so retrieve and C-FIND read the same value."""
    if lossy_uid == LossyUidPolicy.KEEP:
        return str(original_uid)
    if lossy_uid != LossyUidPolicy.DERIVE:
        raise ValueError(f"codec.lossy_uid must be 'derive' or 'keep', got {lossy_uid!r}")
    return derived_uid or str(derive_lossy_uid(original_uid, model_id))


def rebuild_lossless(stored: StoredMetadata, pixel_bytes: bytes | None) -> Dataset:
    """The instance exactly as received (transfer syntax, elements, Pixel Data bytes)."""
    if stored.pixel_vr is not None and pixel_bytes is None:
        raise ValueError("the instance had Pixel Data but no pixel bytes were given")
    return restore_pixel_data(stored, pixel_bytes or b"")


def _declare_lossy(ds: Dataset, ratio: float, source: LossySource) -> None:
    ratio_text = f"{ratio:.2f}"
    if source.received_syntax:
        declare_received_loss(ds, source.received_syntax, source.received_pixel_bytes)
    ratios, methods = aligned_lossy_history(ds, source.received_syntax)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = [*ratios, ratio_text]
    ds.LossyImageCompressionMethod = [*methods, LOSSY_METHOD]
    image_type = _values(ds, "ImageType")
    ds.ImageType = ["DERIVED", *image_type[1:]] if image_type else ["DERIVED", "SECONDARY"]
    weights = f", weights sha256 {source.weights_sha256[:16]}" if source.weights_sha256 else ""
    # ASCII "<=": Derivation Description is text in the default character set
    bound = f"; max abs error <= {source.max_abs_error}" if source.max_abs_error is not None else ""
    note = (f"Lossy compressed by pacs-cae learned autoencoder {source.model_id}{weights}{bound}; "
            f"compression ratio {ratio_text}:1; served uncompressed")
    previous = str(ds.get("DerivationDescription", "") or "")
    ds.DerivationDescription = (f"{previous}; {note}" if previous else note)[:_DERIVATION_DESCRIPTION_MAX]
    codes = list(ds.get("DerivationCodeSequence", []) or [])
    ds.DerivationCodeSequence = Sequence([*codes, _code(*LOSSY_COMPRESSION_CODE)])


#: What C-FIND answers about an image's loss (the values C-GET delivers).
LOSSY_KEYS = ("ImageType", "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod")
_SIZE_KEYS = ("Rows", "Columns", "SamplesPerPixel", "NumberOfFrames", "BitsAllocated")


def delivered_lossy_attributes(stored: Dataset, received_syntax: str, received_pixel_bytes: int,
                               cae: LossySource | None) -> Dataset:
    """:data:`LOSSY_KEYS` as a retrieve delivers them (uncompressed): the received values, the loss of a
    lossy received syntax declared, and the CAE step for a CAE copy (``cae``: its source)."""
    ds = Dataset()
    for keyword in (*LOSSY_KEYS, *_SIZE_KEYS):
        if keyword in stored:
            ds[keyword] = stored[keyword]
    if "Rows" in ds and "BitsAllocated" in ds:
        if cae is not None:
            _declare_lossy(ds, compression_ratio(ds, cae.blob_bytes), cae)
        else:
            declare_received_loss(ds, received_syntax, received_pixel_bytes)
    for keyword in _SIZE_KEYS:
        if keyword in ds:
            del ds[keyword]
    return ds


def _reference_predecessor(ds: Dataset, sop_class: str, sop_instance: str) -> None:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    item.PurposeOfReferenceCodeSequence = Sequence([_code(*UNCOMPRESSED_PREDECESSOR_CODE)])
    existing = list(ds.get("SourceImageSequence", []) or [])
    ds.SourceImageSequence = Sequence([*existing, item])


def rebuild_lossy(stored: StoredMetadata, pixels: np.ndarray, source: LossySource) -> Dataset:
    """The CAE-reconstructed instance: original pixel layout, Explicit VR LE, lossy step declared."""
    ds = stored.dataset
    original_class, original_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    array = np.asarray(pixels)
    if array.shape != (int(ds.Rows), int(ds.Columns)):
        raise ValueError(f"decoded slice {array.shape} does not match Rows x Columns {ds.Rows}x{ds.Columns}")
    bits_allocated = int(ds.BitsAllocated)
    representation = int(ds.get("PixelRepresentation", 0) or 0)
    bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
    dtype = np.dtype(f"{'i' if representation else 'u'}{bits_allocated // 8}")
    low, high = value_range(dtype, bits_stored)
    array = np.clip(array.astype(np.int64), low, high).astype(dtype)

    for tag in _ENCAPSULATION_ONLY:
        if tag in ds:
            del ds[tag]
    ds[PIXEL_DATA] = DataElement(PIXEL_DATA, "OW" if bits_allocated > 8 else "OB",
                                 frames_to_pixel_data([array], bits_allocated, representation))
    _declare_lossy(ds, compression_ratio(ds, source.blob_bytes), source)
    new_uid = served_sop_instance_uid(original_uid, source.model_id, source.lossy_uid, source.derived_uid)
    if new_uid != original_uid:
        _reference_predecessor(ds, original_class, original_uid)
        ds.SOPInstanceUID = new_uid

    meta = FileMetaDataset()
    for elem in stored.dataset.file_meta:
        meta.add(elem)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = UID(original_class)
    meta.MediaStorageSOPInstanceUID = UID(new_uid)
    ds.file_meta = meta
    return ds


__all__ = [
    "LOSSY_COMPRESSION_CODE",
    "LOSSY_KEYS",
    "LOSSY_METHOD",
    "UNCOMPRESSED_PREDECESSOR_CODE",
    "LossySource",
    "compression_ratio",
    "delivered_lossy_attributes",
    "rebuild_lossless",
    "rebuild_lossy",
    "served_sop_instance_uid",
]
