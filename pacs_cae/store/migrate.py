"""Alembic, configured in code: the schema is only ever created or changed by the revisions in ``migrations/``.

They live at the top of the repository and a wheel install ships them as data files
(``<venv>/share/pacs-cae/migrations``, like the shipped models), so a non-editable install upgrades databases too.

No ``alembic.ini`` is needed; ``pacs-cae db upgrade`` and ``serve`` call these helpers with an open connection.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

#: Overrides where the revisions are found (another layout, e.g. a system package).
MIGRATIONS_DIR_ENV = "PACS_CAE_MIGRATIONS_DIR"
#: Where a wheel install puts them, under the environment's data directory (pyproject ``data-files``).
INSTALLED_MIGRATIONS = Path("share", "pacs-cae", "migrations")


def migrations_dir() -> Path:
    """``$PACS_CAE_MIGRATIONS_DIR``; else the checkout's ``migrations/`` (editable install, the repository);
    else the environment's installed copy."""
    env = os.environ.get(MIGRATIONS_DIR_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    return Path(sysconfig.get_path("data")) / INSTALLED_MIGRATIONS


MIGRATIONS_DIR = migrations_dir()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations, optionally bound to an open connection."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise FileNotFoundError(f"Alembic migrations not found at {MIGRATIONS_DIR}: reinstall pacs-cae or set "
                                f"${MIGRATIONS_DIR_ENV} to the repository's migrations/ directory")
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
