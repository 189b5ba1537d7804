"""Alembic, configured in code: the schema is only ever created or changed by the revisions in ``migrations/``.

No ``alembic.ini`` is needed; ``pacs-cae db upgrade`` and ``serve`` call these helpers with an open connection.
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

#: The repository's ``migrations/`` directory (the package is installed editable from the checkout, as in
#: deploy/); ``$PACS_CAE_MIGRATIONS_DIR`` points elsewhere for other layouts.
MIGRATIONS_DIR = Path(os.environ.get("PACS_CAE_MIGRATIONS_DIR") or Path(__file__).resolve().parents[2] / "migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` pointing at ``migrations/``, optionally bound to an open connection."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise FileNotFoundError(
            f"Alembic migrations not found at {MIGRATIONS_DIR}: install pacs-cae from its checkout "
            "(pip install -e .) or set PACS_CAE_MIGRATIONS_DIR to the repository's migrations/ directory"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
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
