"""What every command shares: the --config/--database-url options and turning flags into Settings.

One place decides how command-line flags override the configuration (dotted keys, unset flags do not
override) and how a configuration error ends a command (a one-line message and exit status 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:
    from pacs_cae.config import Settings

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="TOML configuration file (else $PACS_CAE_CONFIG).")
URL_OPTION = typer.Option(None, "--database-url", help="SQLAlchemy URL (overrides database.url).")

#: Command-line flag name -> settings key it overrides.
FLAG_KEYS = {
    "host": "server.host", "port": "server.port", "ae_title": "server.ae_title",
    "database_url": "database.url", "device": "codec.device", "model": "codec.model", "quality": "codec.quality",
    "data_dir": "data_dir", "log_level": "log_level",
}


def flag_overrides(**flags: Any) -> dict[str, Any]:
    """Flags as ``load_settings`` dotted overrides; flags left unset (None) do not override."""
    return {FLAG_KEYS[name]: value for name, value in flags.items() if value is not None}


def load_or_exit(command: str, config: Optional[Path], **flags: Any) -> Settings:
    """The settings for ``pacs-cae COMMAND``, or exit 2 with the configuration error on stderr."""
    from pacs_cae.config import ConfigError, load_settings

    try:
        return load_settings(config, flag_overrides(**flags) or None)
    except ConfigError as exc:
        typer.echo(f"pacs-cae {command}: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
