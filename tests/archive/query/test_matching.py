"""The matching rules on their own, on a scratch table, on both backends (incl. DT ranges no key uses yet)."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from pacs_cae.archive.matching import MatchError, condition, is_universal, like_pattern

scratch = Table("scratch_matching", MetaData(), Column("id", Integer, primary_key=True), Column("s", String),
                Column("n", Integer), Column("dt", String))

ROWS = [
    (1, "ABC_1", 1), (2, "ABCx1", 12), (3, "abc%1", 123), (4, "Doe^John", None),
    (5, None, None), (6, None, None), (7, None, None), (8, None, 7),
]
DATETIMES = {5: "20240101101500", 6: "20240101235959.5+0100", 7: "20240102"}


@pytest.fixture
def match(database):
    scratch.create(database.engine)
    with database.engine.begin() as conn:
        conn.execute(insert(scratch), [{"id": i, "s": s, "n": n, "dt": DATETIMES.get(i)} for i, s, n in ROWS])

    def _match(column: str, kind: str, value: str) -> list[int]:
        cond = condition(scratch.c[column], kind, value)
        stmt = select(scratch.c.id).order_by(scratch.c.id)
        with database.engine.connect() as conn:
            return list(conn.scalars(stmt if cond is None else stmt.where(cond)))

    return _match


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("text", "ABC_1", [1]),
        ("text", "ABC_*", [1]),  # "_" is literal
        ("text", "abc%*", [3]),  # "%" is literal
        ("text", "ABC?1", [1, 2]),
        ("text", "abc*", [3]),  # case-sensitive
        ("pn", "abc*", [1, 2, 3]),  # PN: case-insensitive
        ("pn", "DOE^JOHN", [4]),
        ("text", "ABC_1\\Doe^John", [1, 4]),
        ("text", "", [1, 2, 3, 4, 5, 6, 7, 8]),
        ("text", "**", [1, 2, 3, 4, 5, 6, 7, 8]),
        ("uid", "ABC_1\\ABCx1", [1, 2]),
    ],
)
def test_text_rules(match, kind, value, expected):
    assert match("s", kind, value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240101-20240101", [5, 6]),  # prefix precision on the upper bound
        ("20240101120000-", [6, 7]),
        ("-20240101120000", [5]),
        ("20240101235959.5+0100", [6]),  # an offset is not a range separator
        ("2024", [5, 6, 7]),
        ("", [1, 2, 3, 4, 5, 6, 7, 8]),
    ],
)
def test_datetime_rules(match, value, expected):
    assert match("dt", "datetime", value) == expected


@pytest.mark.parametrize(("value", "expected"), [("12", [2]), ("1\\7", [1, 8]), ("12*", [2, 3]), ("?", [1, 8])])
def test_integer_rules(match, value, expected):
    assert match("n", "int", value) == expected


@pytest.mark.parametrize(
    ("kind", "value"),
    [("date", "2024010"), ("date", "20240101-2024"), ("date", "2024*"), ("time", "1x"), ("datetime", "soon"),
     ("int", "x1"), ("date", "20240101\\20240102")],
)
def test_malformed_values_raise(kind, value):
    with pytest.raises(MatchError):
        condition(scratch.c.s, kind, value)


def test_helpers():
    assert like_pattern("a*b?c%d_e!") == "a%b_c!%d!_e!!"
    assert is_universal("") and is_universal(" * ") and not is_universal("a*")
    assert condition(scratch.c.s, "date", "-") is None  # an open range both ways is universal
