"""``pacs-cae verify``: decode every stored instance through the retrieve path; non-zero exit on any failure."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pacs_cae.cli.app import app
from pacs_cae.cli.options import ConfigOption, DatabaseUrlOption, load_or_exit, require_archive, user_errors


@app.command("verify")
def verify(
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check that every instance's metadata and pixel blob decode (every model still referenced is present)."""
    from pacs_cae.archive.service import Archive

    settings = load_or_exit("verify", config, database_url=database_url)
    require_archive("verify", settings)
    # verify only decodes: blobs name their own model, so the configured encoder need not load (a missing
    # model then shows up as failed instances in the report, not as a traceback).
    with user_errors("verify"), Archive.open(settings, decode_only=True) as archive:
        report = archive.verify()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        for kind, count in sorted(report.checked.items()):
            typer.echo(f"{kind:>32}: {count} checked")
        for uid, reason in report.failures:
            typer.echo(f"FAILED {uid}: {reason}", err=True)
        typer.echo(f"{sum(report.checked.values())} instances checked, {len(report.failures)} failed")
    if not report.ok:
        raise typer.Exit(1)
