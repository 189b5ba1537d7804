"""Engine and unit-of-work handling for SQLite and PostgreSQL.

SQLite is tuned for pynetdicom's one-thread-per-association model: foreign keys on, WAL, a busy timeout, and
write transactions that start with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing with
"database is locked" when a read lock cannot be upgraded. Writers queue on a :class:`WriteQueue` first: a lock
for the threads of one process and, for a database file, an ``flock`` on ``<file>.write-lock`` for the
processes (``serve`` processes, a ``worker`` beside them), so SQLite's sleeping busy handler is left with
nothing to arbitrate.

Durability (``database.sqlite_synchronous``): with WAL, ``NORMAL`` (the default) writes every commit to the WAL
before the commit returns, so a committed instance survives any crash of the process (kill -9, OOM, a
segfault) and the database is never corrupted; only the OS crashing or the power failing before the next WAL
sync can roll back the last commits (SQLite syncs the WAL before each checkpoint, i.e. every half second with
the checkpointer below). ``FULL`` also fsyncs the WAL on every commit (power-loss durable, one
fsync per C-STORE: ~5 ms on this machine's disk).

Checkpoints: SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages, i.e. inside
every eighth or so C-STORE of a 512x512 slice, and took about half of the commit time there. A file database
therefore turns it off per connection and a :class:`WalCheckpointer` thread runs ``wal_checkpoint(PASSIVE)``
every half second beside the writers (it never blocks them; SQLite also checkpoints when the last connection
closes).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, ExceptionContext, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from pacs_cae.config import sqlite_path
from pacs_cae.store import migrate

if TYPE_CHECKING:
    from pacs_cae.config import Settings

LOG = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 60_000
#: sqlite3 messages after which a pooled connection must not be reused: SQLite opened (or degraded) it
#: read-only, and a fresh connection is the only way to write again once the storage is writable.
_SQLITE_REOPEN_ERRORS = ("readonly database", "disk i/o error")


class WriteQueue:
    """Where the write transactions on one SQLite database take turns: threads, then processes.

    SQLite has one writer; a writer that finds it busy sleeps in SQLite's busy handler 1, 2, 5, 10 ... ms
    between retries (most of the C-STORE time with 4 associations before this queue), however soon the
    lock is free. Here a waiting thread blocks on a lock and a waiting process in ``flock`` on
    ``<database file>.write-lock``, and each wakes as soon as the previous writer is done. Readers never
    queue. Re-entrant within a thread. The lock file is opened for each outermost write transaction (some
    microseconds), so no descriptor outlives it or is shared by forked ``serve`` processes (``flock`` only
    excludes other open files); where it cannot be opened (read-only storage) SQLite's own locking remains.
    """

    def __init__(self, lock_path: Path | None) -> None:
        self._path = lock_path
        self._threads = threading.RLock()
        self._depth = 0  # only changed by the thread holding _threads
        self._fd: int | None = None

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            if self._depth == 0 and self._path is not None:
                self._fd = _locked(self._path)
        except BaseException:
            self._threads.release()
            raise
        self._depth += 1

    def __exit__(self, *_: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fd, self._fd = self._fd, None
                os.close(fd)  # releases the flock
        finally:
            self._threads.release()


def _locked(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive ``flock`` (None where the file cannot be opened)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        LOG.debug("no inter-process write queue (%s): %s", path, exc)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks in the kernel, without the GIL
    except BaseException:
        os.close(fd)
        raise
    return fd


class SchemaOutOfDate(RuntimeError):
    """The database schema is not at the code's Alembic head; the message tells the admin what to run."""


class Database:
    """One database: the engine, a session factory, and schema management."""

    def __init__(self, url: str, *, echo: bool = False, sqlite_synchronous: str = "NORMAL") -> None:
        self.url = url
        self._url = make_url(url)
        self.is_sqlite = self._url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            path = sqlite_path(url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
            else:  # in-memory: one shared connection, or every session would see a different empty database
                kwargs["connect_args"] = {"check_same_thread": False}
                kwargs["poolclass"] = StaticPool
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        self._checkpointer: WalCheckpointer | None = None
        self._write_lock: WriteQueue | None = None
        if self.is_sqlite:
            path = sqlite_path(url)
            self._write_lock = WriteQueue(path.with_name(path.name + ".write-lock") if path is not None else None)
            _tune_sqlite(self.engine, sqlite_synchronous, background_checkpoints=path is not None)
            if path is not None:
                self._checkpointer = WalCheckpointer(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # A read-only unit of work sees one snapshot, however many statements it runs (a retrieve reads its
        # instances in chunks while workers swap blobs): SQLite's read transaction is one by itself (WAL),
        # PostgreSQL's default READ COMMITTED is not. Read-only REPEATABLE READ never fails to serialise.
        readonly_options: dict[str, Any] = {"pacs_cae_readonly": True}
        if not self.is_sqlite:
            readonly_options["isolation_level"] = "REPEATABLE READ"
        self._readonly_sessions = sessionmaker(
            self.engine.execution_options(**readonly_options), expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A unit of work: commits when the block succeeds, rolls back if it raises.

        ``readonly=True`` (queries, retrieves) lets SQLite readers run beside a writer instead of queueing;
        every statement of the block sees the same snapshot of the database, on both backends.
        Objects stay usable after the block (``expire_on_commit=False``).
        """
        factory = self._readonly_sessions if readonly else self._sessions
        if not readonly and self._checkpointer is not None:
            self._checkpointer.start()
        lock = self._write_lock if not readonly and self._write_lock is not None else nullcontext()
        with lock, factory() as session:
            try:
                yield session
                if not readonly:
                    session.commit()  # readonly: closing ends the transaction, loaded objects stay usable
            except BaseException:
                session.rollback()
                raise

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (default: the newest) with Alembic."""
        with self.engine.begin() as conn:
            migrate.upgrade(conn, revision)

    def current_revision(self) -> str | None:
        """The Alembic revision the database is at; None for an empty database."""
        with self.engine.connect() as conn:
            return migrate.current_revision(conn)

    def check_current(self) -> None:
        """Raise :class:`SchemaOutOfDate` unless the schema is exactly at the code's Alembic head."""
        current, head = self.current_revision(), migrate.head_revision()
        if current != head:
            state = "has no pacs-cae schema" if current is None else f"is at schema revision {current}"
            raise SchemaOutOfDate(
                f"The database {self.safe_url} {state}, but this version of pacs-cae needs revision {head}. "
                "Back up the database, then run `pacs-cae db upgrade` (with the same --config) and start again."
            )

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages and logs."""
        return self._url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        """Close pooled connections (and stop the WAL checkpointer after a last checkpoint)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()

    def write_problem(self) -> str | None:
        """Why this database cannot take writes right now (None: a write transaction can start).

        Opens a write transaction and rolls it back, which is what SQLite refuses on read-only storage;
        ``serve`` logs the answer at start so a read-only archive is noticed before the first C-STORE.
        """
        try:
            with self.session() as session:
                if self.is_sqlite:
                    session.connection()  # BEGIN IMMEDIATE: takes the write lock
                    session.connection().exec_driver_sql("PRAGMA user_version = 0")
                session.rollback()
        except SQLAlchemyError as exc:
            return str(getattr(exc, "orig", exc))
        return None


def ensure_schema(settings: Settings, database: Database | None = None) -> Database:
    """What ``serve`` (and the admin commands) call at start-up.

    SQLite with ``database.auto_upgrade`` (the embedded default) is upgraded in place; any other database must
    already be current, otherwise :class:`SchemaOutOfDate` tells the admin to run ``pacs-cae db upgrade``.
    """
    db = database or Database(settings.database.url, sqlite_synchronous=settings.database.sqlite_synchronous)
    if db.is_sqlite and settings.database.auto_upgrade:
        db.upgrade()
    else:
        db.check_current()
    return db


#: ``PRAGMA synchronous`` values ``database.sqlite_synchronous`` accepts (see the module docstring).
SQLITE_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")


class WalCheckpointer:
    """A daemon thread that checkpoints a file SQLite database's WAL off the C-STORE path (module docstring).

    Started on the first write session of its :class:`Database` (read-only commands never start it). Each
    round borrows a pooled connection for the one statement and gives it back, so ``engine.dispose()`` (the
    read-only recovery in ``_tune_sqlite``) closes every connection of the process as before.
    """

    INTERVAL_S = 0.5

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop after the round in progress (a disposed Database restarts it on its next write)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            try:
                raw = self.engine.raw_connection()  # autocommit DBAPI connection: no BEGIN around the pragma
                try:
                    raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                finally:
                    raw.close()  # back to the pool
            except (sqlite3.Error, SQLAlchemyError) as exc:  # read-only storage, a locked file: next round
                LOG.debug("WAL checkpoint skipped: %s", exc)


def _tune_sqlite(engine: Engine, synchronous: str, *, background_checkpoints: bool) -> None:
    """Pragmas per connection, and BEGIN IMMEDIATE for write transactions (see the module docstring)."""

    mode = synchronous.strip().upper()
    if mode not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite synchronous {synchronous!r}: one of {', '.join(SQLITE_SYNCHRONOUS)}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={mode}")
        cursor.execute("PRAGMA case_sensitive_like=ON")  # LIKE as on PostgreSQL (C-FIND wildcard matching)
        if background_checkpoints:
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # WalCheckpointer does it, beside the writers
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("pacs_cae_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        # Treated like a lost connection, and every idle connection is closed too: connections of one
        # process share SQLite's per-file state (the WAL index mapping), so one opened read-only keeps every
        # new one read-only. The next unit of work reconnects from scratch. The failed statement's cursor is
        # closed first: SQLAlchemy leaves it open on a disconnect, and while it lives (its traceback sits in a
        # reference cycle until the garbage collector runs) closing the connection only makes it a zombie
        # (sqlite3_close_v2) that keeps the read-only state.
        message = str(context.original_exception).lower()
        if any(text in message for text in _SQLITE_REOPEN_ERRORS):
            context.is_disconnect = True
            cursor = getattr(context.execution_context, "cursor", None)
            if cursor is not None:
                with suppress(sqlite3.Error):  # the connection is discarded either way
                    cursor.close()
            engine.dispose()


__all__ = ["Database", "SchemaOutOfDate", "ensure_schema"]
