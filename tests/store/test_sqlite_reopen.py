"""A connection SQLite refused a write on is closed at once, not when the garbage collector gets to it.

While any connection to the file stays open, SQLite keeps the file's shared state (the WAL index opened
read-only) for the whole process, and the server cannot write again once the storage is writable
(tests/e2e/test_readonly_storage_e2e.py). The failed statement's traceback keeps its cursor alive, so the
connection must be closed without waiting for it to be collected.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from pacs_cae.store.db import Database

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")


def _open_files(directory: Path) -> list[str]:
    """Files under ``directory`` this process holds a descriptor on."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_readonly_error_closes_the_sqlite_connection_without_the_garbage_collector(tmp_path: Path,
                                                                                     no_gc: None) -> None:
    db = Database(f"sqlite:///{tmp_path / 'archive.db'}")
    db.upgrade()
    db.dispose()
    assert _open_files(tmp_path) == []
    try:
        with pytest.raises(OperationalError, match="readonly database"), db.session() as session:
            session.connection().exec_driver_sql("PRAGMA query_only = 1")  # SQLite refuses writes from here
            session.connection().exec_driver_sql("PRAGMA user_version = 7")
        assert _open_files(tmp_path) == []  # the failed connection is gone, with the traceback still alive
        assert db.write_problem() is None  # and a new one writes
    finally:
        db.dispose()
