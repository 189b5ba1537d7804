"""``pacs-cae db upgrade`` / ``db current`` through the real Typer app."""

from __future__ import annotations

from typer.testing import CliRunner

from pacs_cae.store import Database
from pacs_cae.store.migrate import head_revision


def run(*args: str, env: dict | None = None):
    from pacs_cae.cli import app

    return CliRunner().invoke(app, list(args), env=env)


def test_upgrade_then_current(database_url, monkeypatch):
    monkeypatch.delenv("PACS_CAE_CONFIG", raising=False)
    result = run("db", "current", "--database-url", database_url)
    assert result.exit_code == 1 and "pacs-cae db upgrade" in result.output

    result = run("db", "upgrade", "--database-url", database_url)
    assert result.exit_code == 0, result.output
    assert f"upgraded from empty to {head_revision()}" in result.output
    db = Database(database_url)
    try:
        db.check_current()
    finally:
        db.dispose()

    result = run("db", "upgrade", "--database-url", database_url)
    assert result.exit_code == 0 and "already at revision" in result.output
    result = run("db", "current", "--database-url", database_url)
    assert result.exit_code == 0 and "up to date" in result.output


def test_upgrade_reads_the_config_file_and_environment(database_url, tmp_path, monkeypatch):
    monkeypatch.delenv("PACS_CAE_DATABASE_URL", raising=False)
    config = tmp_path / "pacs-cae.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n')
    assert run("db", "upgrade", "--config", str(config)).exit_code == 0
    monkeypatch.setenv("PACS_CAE_DATABASE_URL", database_url)
    assert run("db", "current").exit_code == 0


def test_configuration_errors_exit_2(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[database]\nurl = 1\nnope = 2\n")
    result = run("db", "upgrade", "--config", str(config))
    assert result.exit_code == 2 and "nope" in result.output
