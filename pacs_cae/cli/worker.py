"""``pacs-cae worker`` (compress the backlog) and ``pacs-cae jobs list | retry`` (failed compression jobs)."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from pacs_cae.cli.app import app
from pacs_cae.cli.options import (
    ConfigOption,
    DatabaseUrlOption,
    DeviceOption,
    LogLevelOption,
    MaxAbsErrorOption,
    ModelsDirOption,
    configure_logging,
    load_or_exit,
)
from pacs_cae.cli.stats import format_bytes

LOG = logging.getLogger("pacs_cae.worker")

jobs_app = typer.Typer(help="Compression jobs: list them, retry failed ones.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


@app.command("worker")
def worker(
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
    device: DeviceOption = None,
    models_dir: ModelsDirOption = None,
    quality: Annotated[int | None, typer.Option(
        "--quality", min=1, help="Operating point of a variable-rate model (codec.quality).")] = None,
    max_abs_error: MaxAbsErrorOption = None,
    drain: Annotated[bool, typer.Option(
        "--drain", help="Empty the due backlog (with a progress bar), then exit.")] = False,
    now: Annotated[bool, typer.Option(
        "--now", help="Ignore when jobs are due (compression.delay_s, after_days).")] = False,
    log_level: LogLevelOption = None,
) -> None:
    """Compress stored series by the compression rules until SIGINT/SIGTERM (any number, on one database)."""
    settings = load_or_exit("worker", config, database_url=database_url, device=device, quality=quality,
                            max_abs_error=max_abs_error, models_dir=models_dir, log_level=log_level)
    configure_logging(settings.log_level if not drain else "WARNING")
    archive = _open_or_exit(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if drain:
            before = archive.stats()["stored_pixel_bytes"]
            total = _drain(archive, stop, ignore_delay=now)
            typer.echo(f"drained: {total.jobs} job run(s), {total.compressed} slice(s) stored lossy, "
                       f"{total.kept_lossless} kept lossless, {total.recoded} re-coded losslessly, "
                       f"{total.saved_bytes} bytes saved by lossy copies, "
                       f"{total.failed_jobs} job(s) failed")
            after = archive.stats()
            # the whole archive's pixel blobs: a kept slice's exact re-coding saves space too (and a C-STORE
            # during the drain adds some), which the lossy saving above does not count
            typer.echo(f"pixel blobs in the archive: {format_bytes(before)} before, "
                       f"{format_bytes(after['stored_pixel_bytes'])} after")
            left = after["compression"]
            if left["pending"] or left["failed"]:
                typer.echo(f"left: {left['pending']} pending job(s) not yet due, {left['failed']} failed "
                           "(`pacs-cae jobs list`)")
        else:
            from pacs_cae.archive.workers import CompressionWorker

            w = CompressionWorker(archive.database, settings, archive.codecs, name="worker")
            LOG.info("compression worker %s on %s", w.owner, archive.database.safe_url)
            w.run(stop, ignore_delay=now)
    finally:
        archive.close()


def _open_or_exit(settings: Any) -> Any:
    from pacs_cae.archive.service import Archive
    from pacs_cae.codec.errors import CodecError
    from pacs_cae.store.db import SchemaOutOfDate

    try:
        return Archive.open(settings)
    except (SchemaOutOfDate, CodecError) as exc:
        typer.echo(f"pacs-cae worker: {exc}", err=True)
        raise typer.Exit(2) from None


def _drain(archive: Any, stop: threading.Event, *, ignore_delay: bool) -> Any:
    """Run one worker until the due backlog is empty, with a progress bar over the awaiting slices."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pacs_cae.archive.workers import CompressionWorker
    from pacs_cae.store import jobs

    def awaiting() -> int:
        with archive.database.session(readonly=True) as session:
            return int(jobs.awaiting(session)[0])

    w = CompressionWorker(archive.database, archive.settings, archive.codecs, name="drain")
    columns = (TextColumn("compressing"), BarColumn(), MofNCompleteColumn(), TextColumn("slices"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("drain", total=awaiting())
        done = [0]

        def advance(report: Any) -> None:
            done[0] += report.instances
            progress.update(task, completed=done[0], total=done[0] + awaiting())

        return w.run(stop, drain=True, ignore_delay=ignore_delay, on_report=advance)


def _open_db_or_exit(command: str, config: Path | None, database_url: str | None) -> Any:
    from pacs_cae.store.db import SchemaOutOfDate, ensure_schema

    settings = load_or_exit(command, config, database_url=database_url)
    try:
        return ensure_schema(settings)
    except SchemaOutOfDate as exc:
        typer.echo(f"pacs-cae {command}: {exc}", err=True)
        raise typer.Exit(1) from None


@jobs_app.command("list")
def list_jobs(
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
    state: Annotated[str | None, typer.Option(
        help="Only jobs in this state: pending, running, done, failed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON.")] = False,
) -> None:
    """Compression jobs (one per series) with their state, attempts and the reason of a failure."""
    from sqlalchemy import select

    from pacs_cae.store.schema import JOB_STATES, CompressionJob, Series

    if state is not None and state not in JOB_STATES:
        typer.echo(f"pacs-cae jobs list: --state must be one of {', '.join(JOB_STATES)}", err=True)
        raise typer.Exit(2)
    db = _open_db_or_exit("jobs list", config, database_url)
    try:
        with db.session(readonly=True) as session:
            stmt = (select(CompressionJob, Series.series_instance_uid)
                    .join(Series, Series.id == CompressionJob.series_pk).order_by(CompressionJob.id))
            if state:
                stmt = stmt.where(CompressionJob.state == state)
            rows = [{"id": j.id, "series": uid, "state": j.state, "rule": j.rule, "attempts": j.attempts,
                     "decision": j.decision, "compressed": j.compressed_instances, "reason": j.last_error}
                    for j, uid in session.execute(stmt).all()]
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        reason = f"  {r['reason']}" if r["reason"] else ""
        typer.echo(f"{r['id']:>6} {r['state']:<8} {r['rule']:<12} attempts {r['attempts']} "
                   f"decision {r['decision'] or '-'} compressed {r['compressed']}  {r['series']}{reason}")
    typer.echo(f"{len(rows)} job(s)")


@jobs_app.command("retry")
def retry_jobs(
    job_ids: Annotated[list[int] | None, typer.Argument(help="Job ids (default: every failed job).")] = None,
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Make failed jobs pending again (due now, fresh attempts); a worker picks them up."""
    from pacs_cae.store import jobs

    db = _open_db_or_exit("jobs retry", config, database_url)
    try:
        with db.session() as session:
            count = jobs.retry(session, list(job_ids or []) or None)
    finally:
        db.dispose()
    typer.echo(f"{count} failed job(s) made pending again")
