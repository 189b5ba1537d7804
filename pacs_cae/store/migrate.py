"""Alembic, configured in code: the schema is only ever created or changed by the revisions in
``pacs_cae/migrations/``, which ship inside the package (so a non-editable install can upgrade a database).

No ``alembic.ini`` is needed; ``pacs-cae db upgrade`` and ``serve`` call these helpers with an open connection.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

#: Alembic's package-resource form: found wherever the package is installed (editable or not).
SCRIPT_LOCATION = "pacs_cae:migrations"
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations, optionally bound to an open connection."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision in ``migrations/versions``."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revisions in {MIGRATIONS_DIR / 'versions'}")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Apply the revisions up to ``revision`` inside the caller's transaction."""
    command.upgrade(alembic_config(connection), revision)
