"""What every command shares: the --config/--database-url options and turning flags into Settings.

One place decides how command-line flags override the configuration (dotted keys, unset flags do not
override) and how a configuration error ends a command (a one-line message and exit status 2).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from pacs_cae.config import Settings

#: The options every command that reads the configuration takes (``name: ConfigOption = None``).
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="TOML configuration file (else $PACS_CAE_CONFIG).")]
DatabaseUrlOption = Annotated[str | None, typer.Option(
    "--database-url", help="SQLAlchemy URL (overrides database.url).")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="Codec device: auto, cpu, cuda (codec.device).")]
ModelsDirOption = Annotated[Path | None, typer.Option(
    "--models-dir", help="Model directories (overrides codec.models_dir; default: the shipped models).")]
LogLevelOption = Annotated[str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ...")]
MaxAbsErrorOption = Annotated[float | None, typer.Option(
    "--max-abs-error", min=0,
    help="Largest pixel error allowed, stored levels (codec.max_abs_error); 0 = exact.")]

#: Command-line flag name -> settings key it overrides.
FLAG_KEYS = {
    "host": "server.host", "port": "server.port", "ae_title": "server.ae_title", "processes": "server.processes",
    "database_url": "database.url", "device": "codec.device", "model": "codec.model", "quality": "codec.quality",
    "models_dir": "codec.models_dir", "max_abs_error": "codec.max_abs_error",
    "data_dir": "data_dir", "log_level": "log_level",
}


def configure_logging(level: str | int) -> None:
    """Every command logs the same way: one line per event on stderr; pynetdicom's per-PDU and Alembic's plugin
    chatter only at DEBUG."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    quiet = logging.DEBUG if level in ("DEBUG", logging.DEBUG) else logging.WARNING
    for chatty in ("pynetdicom", "alembic"):
        logging.getLogger(chatty).setLevel(quiet)


def flag_overrides(**flags: Any) -> dict[str, Any]:
    """Flags as ``load_settings`` dotted overrides; flags left unset (None) do not override."""
    return {FLAG_KEYS[name]: str(value) if isinstance(value, Path) else value
            for name, value in flags.items() if value is not None}


def load_or_exit(command: str, config: Path | None, **flags: Any) -> Settings:
    """The settings for ``pacs-cae COMMAND``, or exit 2 with the configuration error on stderr."""
    from pacs_cae.config import ConfigError, load_settings

    try:
        return load_settings(config, flag_overrides(**flags) or None)
    except ConfigError as exc:
        typer.echo(f"pacs-cae {command}: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def fail(command: str, message: str, code: int = 1) -> NoReturn:
    """End ``pacs-cae COMMAND`` with one line on stderr (a user error, never a traceback)."""
    typer.echo(f"pacs-cae {command}: {message}", err=True)
    raise typer.Exit(code)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def user_errors(command: str) -> Iterator[None]:
    """What a user causes and can fix (an invalid, unreachable or out-of-date database, a missing model) as
    one line on stderr and exit status 1."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

    from pacs_cae.codec.errors import CodecError
    from pacs_cae.store.db import SchemaOutOfDate

    try:
        yield
    except (SchemaOutOfDate, CodecError) as exc:
        fail(command, str(exc))
    except (ArgumentError, NoSuchModuleError) as exc:
        fail(command, f"invalid database URL (--database-url / database.url): {_first_line(exc)}")
    except OperationalError as exc:
        fail(command, f"cannot use the database: {_first_line(exc)}")
    except SQLAlchemyError as exc:
        fail(command, f"database error: {_first_line(exc)}")


def require_archive(command: str, settings: Settings) -> None:
    """Refuse an embedded SQLite archive that does not exist: reading commands never create one.

    Run from another directory, the default ``sqlite:///pacs-cae-data/archive.db`` names a file that is
    not there; creating it would report an empty archive as if it were the real one.
    """
    path = settings.database.sqlite_path()
    if path is not None and not path.exists():
        fail(command, f"no archive at {path.resolve()} (database.url {settings.database.url}, relative to "
                      f"{Path.cwd()}); pass the site's --config or --database-url, or create an archive with "
                      "`pacs-cae db upgrade` / `pacs-cae serve`")


def require_extra(command: str, extra: str, *modules: str) -> None:
    """Exit with the pip command to run when an optional extra's modules are missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        fail(command, f"needs the '{extra}' extra (missing: {', '.join(missing)}): "
                      f"pip install 'pacs-cae[{extra}]' (or scripts/setup {extra})")
