"""Is a received data set complete? Checks that run before anything is stored, and again in ``verify``.

pydicom reads a value that the stream cuts short without complaint (a Pixel Data declared 131,072 bytes
arrives with 81,920 and is kept so), so two independent checks guard ingest:

* :func:`encoding_problem` walks the encoded bytes as received and finds a stream that ends inside an
  element (header or value), or an undefined-length sequence / encapsulated Pixel Data without its delimiter;
* :func:`pixel_data_problem` compares native Pixel Data with Rows x Columns x Samples per Pixel x
  Bits Allocated x Number of Frames, and refuses missing or zero image attributes.

Both return a one-line reason, or None when the data is sound; they never raise for bad input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from pacs_cae.dicom.metadata import received_transfer_syntax

#: Explicit VR with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: Nesting deeper than this is refused rather than followed (a hostile stream could recurse forever).
MAX_DEPTH = 64


class _Incomplete(Exception):
    pass


class _Walker:
    """A bounds-checking walk over encoded elements; it reads lengths and tags only, never values."""

    def __init__(self, data: bytes | memoryview, implicit: bool, little: bool) -> None:
        self.data = memoryview(data)
        self.implicit = implicit
        self.order = "<" if little else ">"

    def _unpack(self, fmt: str, offset: int) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        if offset + size > len(self.data):
            raise _Incomplete(f"the stream ends inside an element header at byte {offset}")
        return struct.unpack_from(self.order + fmt, self.data, offset)

    def _tag(self, offset: int) -> int:
        group, element = self._unpack("HH", offset)
        return int(group) << 16 | int(element)

    def elements(self, offset: int, end: int, depth: int, until: int | None = None) -> int:
        """Walk elements from ``offset`` to ``end`` (or to the ``until`` delimiter); returns the end offset."""
        if depth > MAX_DEPTH:
            raise _Incomplete(f"sequences nested deeper than {MAX_DEPTH}")
        while offset < end:
            tag = self._tag(offset)
            if until is not None and tag == until:
                return offset + 8
            offset = self.element(offset, tag, depth)
        if until is not None:
            raise _Incomplete(f"the stream ends before the delimiter (FFFE,{until & 0xFFFF:04X})")
        if offset != end:
            raise _Incomplete(f"an element runs {offset - end} bytes past the end of its container")
        return offset

    def element(self, offset: int, tag: int, depth: int) -> int:
        if tag >> 16 == 0xFFFE or self.implicit:  # items and delimiters have no VR in any syntax
            (length,) = self._unpack("L", offset + 4)
            vr, value = None, offset + 8
        else:
            vr = bytes(self.data[offset + 4:offset + 6])
            if vr in _LONG_VRS:
                (length,) = self._unpack("L", offset + 8)
                value = offset + 12
            else:
                (length,) = self._unpack("H", offset + 6)
                value = offset + 8
        if length != _UNDEFINED:
            if value + length > len(self.data):
                raise _Incomplete(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} bytes, "
                                  f"the stream has {len(self.data) - value}")
            return value + length
        if tag == _ITEM:
            return self.elements(value, len(self.data), depth + 1, until=_ITEM_END)
        if vr == b"UN":  # undefined-length UN is an implicit VR little endian sequence (PS3.5 6.2.2)
            inner = _Walker(self.data, implicit=True, little=True)
            return inner.items(value, depth + 1)
        return self.items(value, depth + 1)

    def items(self, offset: int, depth: int) -> int:
        """The items of an undefined-length sequence (or encapsulated Pixel Data) up to its delimiter."""
        while True:
            tag = self._tag(offset)
            if tag == _SEQUENCE_END:
                return offset + 8
            if tag != _ITEM:
                raise _Incomplete(f"expected an item tag in a sequence at byte {offset}, "
                                  f"found ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            offset = self.element(offset, tag, depth)


@dataclass(frozen=True)
class EncodedDataSet:
    """A data set as it came off the wire (no file meta), in the presentation context's transfer syntax."""

    data: bytes | memoryview
    implicit_vr: bool
    little_endian: bool


def encoding_problem(encoded: EncodedDataSet) -> str | None:
    """Why the encoded data set is incomplete (None: every element is whole)."""
    try:
        walker = _Walker(encoded.data, encoded.implicit_vr, encoded.little_endian)
        walker.elements(0, len(walker.data), 0)
    except _Incomplete as exc:
        return f"incomplete data set: {exc}"
    return None


def top_level_elements(encoded: EncodedDataSet) -> list[tuple[int, int, int]]:
    """``(tag, start, end)`` byte spans of the data set's top-level elements (a nested sequence is one span).

    Raises ValueError for a stream :func:`encoding_problem` would refuse.
    """
    walker = _Walker(encoded.data, encoded.implicit_vr, encoded.little_endian)
    spans, offset, end = [], 0, len(walker.data)
    try:
        while offset < end:
            tag = walker._tag(offset)
            after = walker.element(offset, tag, 0)
            spans.append((tag, offset, after))
            offset = after
    except _Incomplete as exc:
        raise ValueError(f"incomplete data set: {exc}") from exc
    return spans


def _positive(ds: Dataset, keyword: str, default: int | None = None) -> int | str:
    """The attribute as a positive int, or the reason it is not one."""
    value = ds.get(keyword, default)
    if value is None or value == "":
        return f"{keyword} is missing"
    try:
        number = int(value)
    except (TypeError, ValueError):
        return f"{keyword} {value!r} is not a number"
    return number if number > 0 else f"{keyword} is {number}"


def expected_pixel_bytes(ds: Dataset) -> int | str:
    """Native Pixel Data length the image attributes call for (before even-length padding), or why unknown."""
    values: dict[str, int] = {}
    for keyword, default in (("Rows", None), ("Columns", None), ("BitsAllocated", None),
                             ("SamplesPerPixel", 1), ("NumberOfFrames", 1)):
        value = _positive(ds, keyword, default)
        if isinstance(value, str):
            return value
        values[keyword] = value
    bits = values["BitsAllocated"]
    if bits != 1 and bits % 8:
        return f"BitsAllocated {bits} is neither 1 nor a multiple of 8"
    samples = values["SamplesPerPixel"]
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        samples = 2  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    total_bits = values["Rows"] * values["Columns"] * samples * bits * values["NumberOfFrames"]
    return (total_bits + 7) // 8


def pixel_data_problem(ds: Dataset) -> str | None:
    """Why ``ds``'s Pixel Data does not fit its image attributes (None: it fits, or there is none)."""
    if "PixelData" not in ds:
        return None
    expected = expected_pixel_bytes(ds)
    if isinstance(expected, str):
        return f"image attributes unusable: {expected}"
    try:
        encapsulated = received_transfer_syntax(ds).is_encapsulated
        actual = len(ds.PixelData)
    except Exception as exc:  # noqa: BLE001 - an unparsable value is as bad as a short one
        return f"Pixel Data cannot be read: {exc}"
    if encapsulated:
        return None if actual else "encapsulated Pixel Data is empty"
    if actual == expected or (expected % 2 and actual == expected + 1):  # odd lengths are padded to even
        return None
    return f"Pixel Data is {actual} bytes, the image attributes call for {expected}"


__all__ = ["EncodedDataSet", "encoding_problem", "expected_pixel_bytes", "pixel_data_problem", "top_level_elements"]
