"""Shared fixtures: ``database_url`` runs a test against SQLite and against PostgreSQL.

PostgreSQL comes from ``$PACS_CAE_TEST_PG_URL`` (default: the local server,
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). One uniquely named database is created per test
session and dropped at the end; each test gets its own schema in it (via ``search_path``), so tests never see
each other's rows. If PostgreSQL cannot be reached the PostgreSQL variants FAIL with the reason; set
``PACS_CAE_TEST_PG_URL=`` (empty) to leave them out on a machine without PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_ENV = "PACS_CAE_TEST_PG_URL"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _pg_admin_url() -> str:
    return os.environ.get(PG_ENV, PG_DEFAULT)


BACKENDS = ["sqlite"] + (
    [pytest.param("postgresql", marks=pytest.mark.postgresql)] if _pg_admin_url() != "" else []
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="also run the soak tests (minutes; tests/e2e/test_soak_e2e.py)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: runs against the PostgreSQL server ($PACS_CAE_TEST_PG_URL)")
    config.addinivalue_line("markers", "soak: long load test with kills and restarts; runs only with --soak")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak tests are opted into with ``--soak``; otherwise they are deselected (not skipped)."""
    if config.getoption("--soak"):
        return
    soak = [item for item in items if item.get_closest_marker("soak")]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if not item.get_closest_marker("soak")]


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = make_url(_pg_admin_url())
    name = f"pacs_cae_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure gets the same advice
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {admin_url.render_as_string(hide_password=True)} is not usable ({exc}). Start it "
            "(`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`), point "
            f"{PG_ENV} at a server, or set {PG_ENV}= (empty) to leave the PostgreSQL tests out.",
            pytrace=False,
        )
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def _empty_database(request: pytest.FixtureRequest, backend: str, directory: Path) -> Iterator[str]:
    """A URL with no schema: a SQLite file in ``directory``, or a fresh schema in the session's PG database."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'archive.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(request.getfixturevalue("pg_database_url"))
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL (no schema yet): a temporary SQLite file, or a fresh PostgreSQL schema."""
    with _empty_database(request, request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like ``database_url`` but shared by one test module (for read-only tests on a prepared archive)."""
    with _empty_database(request, request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture
def postgresql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty PostgreSQL schema, for tests only PostgreSQL can run (many processes on one database)."""
    with _empty_database(request, "postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def database(database_url: str) -> Iterator[object]:
    """A :class:`pacs_cae.store.Database` on ``database_url`` with the schema at the Alembic head."""
    from pacs_cae.store.db import Database

    db = Database(database_url)
    db.upgrade()
    try:
        yield db
    finally:
        db.dispose()
