"""``pacs-cae db upgrade | current``: the database schema, managed by the Alembic revisions in migrations/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pacs_cae.cli.app import app
from pacs_cae.cli.options import ConfigOption, DatabaseUrlOption, load_or_exit, require_archive, user_errors

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]

if TYPE_CHECKING:
    from pacs_cae.store.db import Database

db_app = typer.Typer(help="Database schema: upgrade to the newest revision, or show the current one.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")



def _database(config: Path | None, database_url: str | None, *, create: bool) -> Database:
    """Settings -> Database (``create``: a missing SQLite file may be made); imports stay inside so
    `pacs-cae --help` does not load SQLAlchemy."""
    from pacs_cae.store.db import Database

    settings = load_or_exit("db", config, database_url=database_url)
    if not create:
        require_archive("db current", settings)
    url = settings.database.url
    with user_errors("db"):
        return Database(url)


@db_app.command("upgrade")
def upgrade(config: ConfigOption = None, database_url: DatabaseUrlOption = None,
            as_json: JsonOption = False) -> None:
    """Create the schema or bring it to the newest Alembic revision (back up PostgreSQL first)."""
    from pacs_cae.store.migrate import head_revision

    db = _database(config, database_url, create=True)
    try:
        with user_errors("db upgrade"):
            before = db.current_revision()
            db.upgrade()
            after = db.current_revision()
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps({"database": db.safe_url, "before": before, "after": after, "head": head_revision()}))
    elif before == after:
        typer.echo(f"{db.safe_url}: already at revision {after} (head {head_revision()})")
    else:
        typer.echo(f"{db.safe_url}: upgraded from {before or 'empty'} to {after}")


@db_app.command("current")
def current(config: ConfigOption = None, database_url: DatabaseUrlOption = None,
            as_json: JsonOption = False) -> None:
    """Show the schema revision; exit status 1 when it is not the newest."""
    from pacs_cae.store.migrate import head_revision

    db = _database(config, database_url, create=False)
    try:
        with user_errors("db current"):
            revision = db.current_revision()
    finally:
        db.dispose()
    head = head_revision()
    if as_json:
        typer.echo(json.dumps({"database": db.safe_url, "revision": revision, "head": head,
                               "up_to_date": revision == head}))
    else:
        state = "up to date" if revision == head else "out of date: run `pacs-cae db upgrade`"
        typer.echo(f"{db.safe_url}: revision {revision or 'none (empty database)'}, head {head} ({state})")
    if revision != head:
        raise typer.Exit(1)
