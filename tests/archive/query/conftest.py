"""A small archive of index rows (no pixels) for the C-FIND / locate tests, on SQLite and PostgreSQL.

PID1 Doe^John    study 1.2.3.1 (20240115 101500, ACC1): series .1 MR x3 (2 CAE, 1 lossless), series .2 SR x1
                 study 1.2.3.2 (20240301 154500.123, ACC2): series .1 MR x2 (CAE)
PID2 Smith^Jane  study 1.2.3.3 (20231231 080000, ACC_3%): series .1 CT x1 (lossless)   issuer HOSP
PID3 Müller^Hans study 1.2.3.4 (20220601 000000, ACC4): series .1 MR x1 (lossless)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pydicom.dataset import Dataset
from query_data import store_all

from pacs_cae.store import Database


@pytest.fixture(scope="module")
def archive_db(module_database_url: str) -> Iterator[Database]:
    """The fixture archive, built once per test module and backend (the query tests only read)."""
    db = Database(module_database_url)
    db.upgrade()
    store_all(db)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def query(archive_db: Database) -> Callable[..., list[Dataset]]:
    """``query(model, level, lossy_uid=..., **keys)`` -> the C-FIND responses as a list."""
    from pacs_cae.archive.query import find

    def _query(model: str, level: str, *, lossy_uid: str = "derive", **keys: object) -> list[Dataset]:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = level
        for key, value in keys.items():
            setattr(identifier, key, value)
        with archive_db.session(readonly=True) as session:
            return list(find(session, model, identifier, lossy_uid=lossy_uid))

    return _query
