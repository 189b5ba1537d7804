"""``pacs-cae stats``: what the archive holds and what the codec saved (a table, or ``--json`` for scripts)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from pacs_cae.cli.app import app
from pacs_cae.cli.options import ConfigOption, DatabaseUrlOption, load_or_exit, require_archive, user_errors


@app.command("stats")
def stats(
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Counts per level, original vs stored bytes and ratios (overall, per codec model, per modality)."""
    from pacs_cae.archive.service import Archive

    settings = load_or_exit("stats", config, database_url=database_url)
    require_archive("stats", settings)
    # decode_only: stats reads rows only, so no model is loaded (a missing one does not stop it)
    with user_errors("stats"), Archive.open(settings, decode_only=True) as archive:
        figures = archive.stats()
    if as_json:
        typer.echo(json.dumps(figures, indent=2, sort_keys=True))
    else:
        _print_tables(figures)


def format_bytes(n: int) -> str:
    """A byte count as an admin reads it (B, KiB, MiB, ...)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}:1"


def _print_tables(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title="pacs-cae archive", show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("", justify="right")
    for label, key in (("patients", "patients"), ("studies", "studies"), ("series", "series"),
                       ("instances", "instances")):
        summary.add_row(label, str(s[key]))
    summary.add_row("original pixel data", format_bytes(s["original_bytes"]))
    summary.add_row("stored (pixels + metadata)", format_bytes(s["stored_bytes"]))
    summary.add_row("  of which pixel blobs", format_bytes(s["stored_pixel_bytes"]))
    summary.add_row("  of which metadata", format_bytes(s["metadata_bytes"]))
    summary.add_row("ratio (original / stored)", _ratio(s["ratio"]))
    summary.add_row("pixel ratio (original / pixel blobs)", _ratio(s["pixel_ratio"]))
    summary.add_row("quality-gate fallbacks", str(s["fallbacks"]["quality_gate"]))
    summary.add_row("other fallbacks", str(s["fallbacks"]["total"] - s["fallbacks"]["quality_gate"]))
    rejected = s["rejected"]
    summary.add_row("refused or not stored on receipt", str(rejected["total"]))
    for reason, n in rejected["by_reason"].items():
        summary.add_row(f"  {reason}", str(n))
    summary.add_row("oldest study", s["oldest_study_date"] or "-")
    summary.add_row("newest study", s["newest_study_date"] or "-")
    console.print(summary)
    _print_backlog(console, s["compression"])
    for title, names in (("by storage / codec model", ("storage", "model")), ("by modality", ("modality",))):
        table = Table(title=title)
        for name in names:
            table.add_column(name)
        # short headers: eight columns fit an 80-column terminal without truncation
        for column in ("count", "original", "stored", "pixels", "ratio", "px ratio"):
            table.add_column(column, justify="right")
        for row in s["by_" + names[0]]:
            table.add_row(
                *(str(row[n] or "-") for n in names),
                str(row["instances"]), format_bytes(row["original_bytes"]), format_bytes(row["stored_bytes"]),
                format_bytes(row["stored_pixel_bytes"]), _ratio(row["ratio"]), _ratio(row["pixel_ratio"]),
            )
        console.print(table)


def _print_backlog(console: Any, c: dict[str, Any]) -> None:
    """The deferred-compression backlog: jobs by state, what awaits the codec, what it saved so far."""
    from rich.table import Table

    table = Table(title="compression backlog (series jobs)", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("pending (due now)", f"{c['pending']} ({c['due']})")
    table.add_row("running", str(c["running"]))
    table.add_row("failed", str(c["failed"]))
    table.add_row("done", str(c["done"]))
    table.add_row("instances awaiting compression", str(c["instances_awaiting"]))
    table.add_row("bytes awaiting compression", format_bytes(c["bytes_awaiting"]))
    table.add_row("instances compressed so far", str(c["instances_compressed"]))
    table.add_row("saved so far (lossless - lossy)", format_bytes(c["saved_bytes"]))
    console.print(table)
    for job in c["failed_jobs"]:
        console.print(f"failed job {job['id']} (rule {job['rule']!r}): {job['reason']}  "
                      "- retry with `pacs-cae jobs retry`")
