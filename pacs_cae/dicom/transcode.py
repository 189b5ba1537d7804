"""Serve a stored instance in a transfer syntax the peer accepted: which one, and the conversion.

The rule (PS3.5 10, 8.2; PS3.4 B.4.1): an instance is sent in the syntax it was stored in whenever the peer
accepted that syntax for its SOP class, with no pixel decode; otherwise its pixels are decoded with
pydicom's pixel backends (pylibjpeg, pyjpegls and pydicom's RLE codec, all required dependencies) and sent
uncompressed (Explicit VR LE, else Implicit VR LE, else Deflated), or, when the peer accepted no
uncompressed syntax, encoded into a *lossless* compressed syntax it accepted (JPEG-LS lossless, JPEG 2000
lossless, RLE). The archive never encodes into a lossy syntax: that would add loss nobody asked for.

Decompressing a lossy-compressed instance keeps its loss visible: Lossy Image Compression "01" and a
ratio/method pair are added when the received instance did not declare them (PS3.3 C.7.6.1.1.5), and ratio
and method always carry the same number of values (:func:`aligned_lossy_history`).

Big-endian input is normalised to Explicit VR Little Endian on storage (:func:`to_little_endian`): values
are unchanged, only their byte order (PS3.5 7.3); Explicit VR Big Endian is retired.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

#: Uncompressed syntaxes first: they are what every SCU can read back.
UNCOMPRESSED_TRANSFER_SYNTAXES: list[UID] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]
#: What a modality may send us on C-STORE (pydicom's pixel backends decode every one), in the order the
#: archive accepts them when several are proposed: uncompressed, lossless, and lossy last, so a modality is
#: never asked for a lossy encoding when it offered something else.
ACCEPTED_TRANSFER_SYNTAXES: list[UID] = UNCOMPRESSED_TRANSFER_SYNTAXES + [
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    JPEG2000,
]
#: Uncompressed little-endian syntaxes, in the order the archive prefers to send them.
UNCOMPRESSED_LE: tuple[UID, ...] = tuple(UNCOMPRESSED_TRANSFER_SYNTAXES[:3])
#: Compressed syntaxes the archive encodes into on request, without loss, in order of preference.
LOSSLESS_ENCODINGS: tuple[UID, ...] = (JPEGLSLossless, JPEG2000Lossless, RLELossless)
#: Syntaxes whose codestream may be lossy, with the Lossy Image Compression Method defined term (C.7.6.1.1.5).
LOSSY_METHODS: dict[str, str] = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
}


def decoding_plugin(syntax: str) -> str:
    """The pydicom decoding plugin the archive uses for ``syntax``, whatever else is installed.

    Lossy JPEG decoders may round differently (Pillow's libjpeg-turbo vs libjpeg); pinning one keeps the
    served pixels the same on every install. RLE is pydicom's own; everything else goes through pylibjpeg.
    """
    return "pydicom" if UID(syntax) == RLELossless else "pylibjpeg"


_ENCAPSULATION_ONLY = (0x7FE00001, 0x7FE00002)  # Extended Offset Table (+ Lengths)
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class TranscodeError(ValueError):
    """The instance cannot be converted to the syntax asked for (no decoder, unsupported pixel layout)."""


def choose_syntax(stored: str, accepted: Sequence[str], has_pixels: bool) -> UID | None:
    """The syntax to send an instance stored in ``stored`` in, from the peer's ``accepted`` ones (None: none fits).

    Without Pixel Data, every little-endian syntax is only an encoding of the same elements (a compressed
    syntax then means Explicit VR LE), so any of them will do.
    """
    stored_uid, offered = UID(stored), [UID(s) for s in accepted]
    if stored_uid in offered:
        return stored_uid
    for syntax in UNCOMPRESSED_LE:
        if syntax in offered:
            return syntax
    if not has_pixels:
        return next((s for s in offered if s.is_little_endian), None)
    return next((s for s in LOSSLESS_ENCODINGS if s in offered), None)


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, (MultiValue, list, tuple)) else [str(value)]


def aligned_lossy_history(ds: Dataset, received: str) -> tuple[list[str], list[str]]:
    """(ratios, methods) of the lossy steps ``ds`` declares, with equal counts.

    A ratio without a method gets the received syntax's method when that syntax is lossy, else "UNKNOWN";
    methods beyond the last ratio have no ratio to pair with and are dropped (a ratio cannot be invented).
    """
    ratios, methods = _values(ds, "LossyImageCompressionRatio"), _values(ds, "LossyImageCompressionMethod")
    fill = LOSSY_METHODS.get(str(received), "UNKNOWN")
    methods = (methods + [fill] * len(ratios))[:len(ratios)]
    return ratios, methods


def declare_received_loss(ds: Dataset, received: str, codestream_bytes: int) -> None:
    """Before the codestream of a lossy syntax is replaced: keep its loss declared in the attributes."""
    method = LOSSY_METHODS.get(str(received))
    if method is None:
        return
    ratios, methods = aligned_lossy_history(ds, received)
    if str(ds.get("LossyImageCompression", "") or "") == "01" and ratios:
        ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod = ratios, methods
        return
    ds.LossyImageCompression = "01"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * frames
            * int(ds.BitsAllocated))
    ratio = bits / max(1, 8 * codestream_bytes)
    ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"]
    ds.LossyImageCompressionMethod = [*methods, method]


def _swap(value: bytes, width: int) -> bytes:
    if width <= 1 or not value:
        return value
    import numpy as np

    return np.frombuffer(value, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def _swap_elements(ds: Dataset) -> None:
    for elem in ds:  # iterating converts raw elements: numeric VRs become Python values
        if elem.VR == "SQ":
            for item in elem.value or []:
                _swap_elements(item)
        elif elem.tag == 0x7FE00010 and elem.VR == "OB":
            continue
        elif elem.VR in _SWAP_WIDTH and isinstance(elem.value, (bytes, bytearray)):
            width = _SWAP_WIDTH[elem.VR]
            if elem.tag == 0x7FE00010:
                width = max(2, int(ds.get("BitsAllocated", 16) or 16) // 8)
            elem.value = _swap(bytes(elem.value), width)


def to_little_endian(ds: Dataset) -> bool:
    """Rewrite an Explicit VR Big Endian dataset as Explicit VR Little Endian in place (same values).

    Returns False (nothing changed) for any other syntax. Pixel Data is swapped per BitsAllocated sample,
    other OW/OF/OL/OD/OV values per word; numeric VRs are re-encoded by the writer.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") != ExplicitVRBigEndian:
        return False
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if "PixelData" in ds and bits not in (0, 1, 8, 16, 32, 64):
        raise TranscodeError(f"big-endian Pixel Data with BitsAllocated {bits} cannot be normalised")
    _swap_elements(ds)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_original_encoding(False, True, ds.original_character_set)
    return True


def decompress(ds: Dataset, received: str) -> None:
    """Decode encapsulated Pixel Data to native Explicit VR LE in place (same SOP Instance UID)."""
    codestream = len(ds.PixelData)
    declare_received_loss(ds, received, codestream)
    try:
        ds.decompress(generate_instance_uid=False, decoding_plugin=decoding_plugin(received))
    except Exception as exc:  # RuntimeError from every failing plugin, ValueError for a bad stream
        raise TranscodeError(f"cannot decode {UID(received).name}: {exc}") from exc
    for tag in _ENCAPSULATION_ONLY:
        if tag in ds:
            del ds[tag]
    ds["PixelData"].is_undefined_length = False


def transcode(ds: Dataset, target: str) -> Dataset:
    """``ds`` (file meta naming its current syntax) converted to ``target`` in place; returns ``ds``."""
    target_uid = UID(target)
    current = UID(ds.file_meta.TransferSyntaxUID)
    if current == target_uid:
        return ds
    if current == ExplicitVRBigEndian:
        to_little_endian(ds)
        current = ExplicitVRLittleEndian
    has_pixels = "PixelData" in ds
    if has_pixels and current.is_compressed:
        decompress(ds, current)
    if has_pixels and target_uid.is_compressed:
        try:
            ds.compress(target_uid, generate_instance_uid=False)
        except Exception as exc:
            raise TranscodeError(f"cannot encode as {target_uid.name}: {exc}") from exc
        return ds
    encoding = (target_uid.is_implicit_VR, target_uid.is_little_endian)
    if None not in ds.original_encoding and ds.original_encoding != encoding:
        # Raw elements must be decoded with the encoding they were read in before the dataset claims another.
        _decode_raw(ds)
        ds.set_original_encoding(*encoding, ds.original_character_set)
    ds.file_meta.TransferSyntaxUID = target_uid
    return ds


def _decode_raw(ds: Dataset) -> None:
    for elem in ds:  # Dataset iteration replaces each raw element by its decoded DataElement
        if elem.VR == "SQ":
            for item in elem.value or []:
                _decode_raw(item)


__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "LOSSLESS_ENCODINGS",
    "LOSSY_METHODS",
    "UNCOMPRESSED_LE",
    "UNCOMPRESSED_TRANSFER_SYNTAXES",
    "TranscodeError",
    "aligned_lossy_history",
    "choose_syntax",
    "declare_received_loss",
    "decoding_plugin",
    "decompress",
    "to_little_endian",
    "transcode",
]
