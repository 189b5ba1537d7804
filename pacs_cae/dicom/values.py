"""DICOM attribute values as plain Python values, read the same way wherever the archive indexes or decides.

Used by the codec policy and by ingest (:mod:`pacs_cae.archive.received`): text with multi-values joined by
backslash, dates and times in the comparable DICOM form, integers tolerant of the forms modalities send.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue


def text(ds: Dataset, keyword: str) -> str | None:
    """A string value; multi-valued attributes joined with backslash as on the wire; '' becomes None."""
    value = ds.get(keyword)
    if value is None:
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        joined = "\\".join(str(v) for v in value)
    else:
        joined = str(value)
    joined = joined.strip().strip("\x00")
    return joined or None


def date(ds: Dataset, keyword: str) -> str | None:
    """DA as ``YYYYMMDD`` (the ACR-NEMA ``YYYY.MM.DD`` form is normalised so ranges compare as text)."""
    value = text(ds, keyword)
    return value.replace(".", "") if value else None


def time(ds: Dataset, keyword: str) -> str | None:
    """TM without the ACR-NEMA colons, so ranges compare as text."""
    value = text(ds, keyword)
    return value.replace(":", "") if value else None


def integer(ds: Dataset, keyword: str) -> int | None:
    """An integer value (the first of several); None when absent, empty or not a number."""
    value = ds.get(keyword)
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return None


__all__ = ["date", "integer", "text", "time"]
