"""Write transactions queue on the Database's WriteQueue, not in SQLite's sleeping busy handler.

SQLite's busy handler retries a locked ``BEGIN IMMEDIATE`` after sleeping 1, 2, 5, 10 ... ms; with four
C-STORE associations that waiting was most of the store time. Threads of one process and processes on one
database file (several ``serve`` processes, a ``worker``) take turns; readers never queue behind the lock.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from pacs_cae.store.db import Database


def _database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'archive.db'}")
    db.upgrade()
    return db


def test_write_sessions_of_one_process_never_overlap(tmp_path: Path) -> None:
    db = _database(tmp_path)
    inside, most, guard = 0, 0, threading.Lock()
    errors: list[BaseException] = []

    def writer() -> None:
        nonlocal inside, most
        try:
            for _ in range(10):
                with db.session() as session:
                    with guard:
                        inside += 1
                        most = max(most, inside)
                    session.execute(text("PRAGMA user_version = 1"))
                    with guard:
                        inside -= 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert most == 1
    finally:
        db.dispose()


def test_a_reader_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    db = _database(tmp_path)
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with db.session() as session:
            session.connection()  # BEGIN IMMEDIATE
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(30)
        with db.session(readonly=True) as session:
            assert session.execute(text("SELECT 1")).scalar() == 1
    finally:
        release.set()
        thread.join(30)
        db.dispose()


def _write_in_turns(path: Path, inside: Any, most: Any) -> None:
    """One process's writer: its own Database, opened after the fork as a serve child opens it."""
    db = Database(f"sqlite:///{path}")
    try:
        for _ in range(10):
            with db.session() as session:
                with inside.get_lock():
                    inside.value += 1
                    most.value = max(most.value, inside.value)
                time.sleep(0.005)  # widen the window another process would write in
                session.execute(text("PRAGMA user_version = 1"))
                with inside.get_lock():
                    inside.value -= 1
    finally:
        db.dispose()


def test_write_sessions_of_two_processes_never_overlap(tmp_path: Path) -> None:
    _database(tmp_path).dispose()
    context = multiprocessing.get_context("fork")
    inside, most = context.Value("i", 0), context.Value("i", 0)
    children = [context.Process(target=_write_in_turns, args=(tmp_path / "archive.db", inside, most))
                for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0]
    assert most.value == 1
