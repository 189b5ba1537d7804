"""PS3.4 C.2.2.2 attribute matching, translated to SQL conditions on one column.

- universal: an empty value (or only ``*``) matches everything: no condition;
- single value: equality (Person Name case-insensitively, see below);
- wildcard: ``*`` (any run) and ``?`` (one character) become ``LIKE`` with ``%`` / ``_``, other ``LIKE``
  metacharacters escaped; not for UIDs, dates or times;
- list: a backslash-separated value matches any of its items (PS3.4 "List of UID Matching"; for other text and
  integer keys it is applied the same way, a harmless superset of the standard);
- range: ``a-b``, ``a-`` and ``-b`` for DA, TM and DT, inclusive. Dates and times are compared as text, which
  is correct for DICOM's fixed-order digit strings; a time or datetime given with less precision matches every
  value starting with it (``-1300`` includes ``130059``).

Person Name matching is case-insensitive on both backends (``lower()``; SQLite folds ASCII letters only).
Other text matching is case-sensitive on both (SQLite connections set ``case_sensitive_like``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from sqlalchemy import String, and_, cast, func, or_
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

#: A mapped attribute (``Study.study_date``) or a SQL expression to match against.
Column = ColumnElement[Any] | QueryableAttribute[Any]

Kind = Literal["text", "pn", "uid", "date", "time", "datetime", "int"]

_ESCAPE = "!"
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DATETIME = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")


class MatchError(ValueError):
    """A key's value cannot be parsed for its kind (e.g. a malformed date range)."""


def is_universal(value: str) -> bool:
    """Empty or only ``*``: matches every entity (the key is just asked to be returned)."""
    return value.strip().strip("*") == ""


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def condition(column: Column, kind: Kind, value: str | None) -> ColumnElement[bool] | None:
    """The SQL condition for ``value`` on ``column`` (None: universal, no restriction)."""
    if value is None:
        return None
    value = str(value).strip()
    if is_universal(value):
        return None
    if kind == "date":
        return _range_or_single(column, value.replace(".", ""), _DATE, prefix=False, what="date")
    if kind == "time":
        return _range_or_single(column, value.replace(":", ""), _TIME, prefix=True, what="time")
    if kind == "datetime":
        return _range_or_single(column, value, _DATETIME, prefix=True, what="datetime")
    items = [item.strip() for item in value.split("\\") if item.strip()]
    if not items:
        return None
    if kind == "uid":
        return column.in_(items) if len(items) > 1 else column == items[0]
    parts = [_one(column, kind, item) for item in items]
    return parts[0] if len(parts) == 1 else or_(*parts)


def _one(column: Column, kind: Kind, item: str) -> ColumnElement[bool]:
    if kind == "int":
        if has_wildcard(item):
            return cast(column, String).like(like_pattern(item), escape=_ESCAPE)
        try:
            return column == int(item)
        except ValueError:
            raise MatchError(f"{item!r} is not an integer") from None
    if kind == "pn":
        target = func.lower(column)
        if has_wildcard(item):
            return target.like(like_pattern(item.lower()), escape=_ESCAPE)
        return target == item.lower()
    if has_wildcard(item):
        return column.like(like_pattern(item), escape=_ESCAPE)
    return column == item


def like_pattern(value: str) -> str:
    """DICOM wildcards to a LIKE pattern using ``!`` as the escape character."""
    out = []
    for ch in value:
        if ch in (_ESCAPE, "%", "_"):
            out.append(_ESCAPE + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _range_or_single(
    column: Column, value: str, pattern: re.Pattern[str], *, prefix: bool, what: str
) -> ColumnElement[bool] | None:
    if has_wildcard(value) or "\\" in value:
        raise MatchError(f"{what} {value!r}: wildcards and lists are not allowed for {what}s")
    lo, sep, hi = _split_range(value, pattern, what)
    if not sep:
        return column.startswith(lo, autoescape=True) if prefix else column == lo
    conditions = []
    if lo:
        conditions.append(column >= lo)
    if hi:
        upper = column <= hi
        conditions.append(or_(upper, column.startswith(hi, autoescape=True)) if prefix else upper)
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else and_(*conditions)


def _split_range(value: str, pattern: re.Pattern[str], what: str) -> tuple[str, str, str]:
    """``(lo, "-", hi)`` for a range, ``(value, "", "")`` for a single value.

    A datetime may carry a ``-HHMM`` UTC offset, so a hyphen only separates a range where both sides are valid
    (a value that is valid as a whole is a single value).
    """
    if pattern.match(value):
        return value, "", ""
    for i, ch in enumerate(value):
        if ch == "-":
            lo, hi = value[:i].strip(), value[i + 1:].strip()
            if all(not bound or pattern.match(bound) for bound in (lo, hi)):
                return lo, "-", hi
    raise MatchError(f"invalid {what} or {what} range {value!r}")


__all__ = ["Kind", "MatchError", "condition", "has_wildcard", "is_universal", "like_pattern"]
