"""``pacs-cae serve``: run the archive's DICOM AE until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from collections.abc import Callable

    from pacs_cae.archive.service import Archive
    from pacs_cae.net.processes import Listener

LOG = logging.getLogger("pacs_cae.serve")


def safe_url(url: str) -> str:
    """The database URL with any password masked, for logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: mask what could be credentials
        return url.split("@")[-1] if "@" in url else url


def describe_model(archive: Archive, model_id: str) -> str:
    """``id (sha256 prefix, device)`` of the model new slices are encoded with."""
    codec = archive.codecs.encoder
    if codec is None:
        return f"none: {model_id!r} stores every instance losslessly"
    return f"{codec.model_id} (sha256 {codec.weights_sha256[:12]}…, device {codec.device})"


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (server.port).")] = None,
    ae_title: Annotated[str | None, typer.Option(
        "--ae-title", help="Our AE title (server.ae_title).")] = None,
    database_url: DatabaseUrlOption = None,
    device: DeviceOption = None,
    model: Annotated[str | None, typer.Option(help="Codec model id for new instances (codec.model).")] = None,
    quality: Annotated[int | None, typer.Option(
        "--quality", min=1, help="Operating point of a variable-rate model (codec.quality).")] = None,
    max_abs_error: MaxAbsErrorOption = None,
    processes: Annotated[int | None, typer.Option(
        "--processes", min=0, help="serve processes sharing the port; 0 = one per CPU core (server.processes).")
    ] = None,
    models_dir: ModelsDirOption = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Data directory (data_dir).")] = None,
    log_level: LogLevelOption = None,
) -> None:
    """Serve C-ECHO, C-STORE, C-FIND, C-GET and C-MOVE until SIGINT/SIGTERM."""
    settings = load_or_exit("serve", config, host=host, port=port, ae_title=ae_title, database_url=database_url,
                            device=device, model=model, quality=quality, max_abs_error=max_abs_error,
                            processes=processes, models_dir=models_dir, data_dir=data_dir, log_level=log_level)
    configure_logging(settings.log_level)
    check_tls_or_exit(settings)
    raise typer.Exit(run_processes(settings))


def run_processes(settings: Any) -> int:
    """``server.processes`` serve processes on one port (a supervisor above them), or just :func:`run`."""
    from pacs_cae.net.processes import Supervisor, bind, resolve_processes

    count = resolve_processes(settings.server.processes)
    if count == 1:
        return run(settings)
    try:
        sock = bind(settings.server.host, settings.server.port)
    except OSError as exc:
        LOG.error("cannot listen on %s:%d: %s", settings.server.host, settings.server.port, exc)
        return 1
    return Supervisor(sock, count, lambda listener, ready: run(settings, listener, ready)).run()


def check_tls_or_exit(settings: Any) -> None:
    """Load the TLS certificate/key before anything starts, so a bad one is a one-line error (exit 2)."""
    from pacs_cae.config import ConfigError
    from pacs_cae.net.tls import server_context

    try:
        server_context(settings.server)
    except ConfigError as exc:
        typer.echo(f"pacs-cae serve: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def run(settings: Any, listener: Listener | None = None, on_listening: Callable[[], None] | None = None) -> int:
    """Open the archive, serve until signalled, close the archive; the process exit code.

    ``listener``: this is one of several serve processes (:mod:`pacs_cae.net.processes`); the compression
    worker threads run in the first one only.
    """
    from pacs_cae.archive.service import Archive
    from pacs_cae.archive.workers import WorkerThreads, serve_worker_count
    from pacs_cae.net.server import serve_until_signalled

    url = safe_url(settings.database.url)
    try:
        archive = Archive.open(settings)
    except Exception as exc:
        if type(exc).__name__ == "SchemaOutOfDate":
            LOG.error("database %s has an out-of-date schema (%s); run `pacs-cae db upgrade "
                      "--database-url ...` first", url, exc)
        else:
            LOG.error("cannot open the archive on %s: %s", url, exc, exc_info=settings.log_level == "DEBUG")
        return 2
    workers = None
    try:
        LOG.info("database %s", url)
        problem = archive.database.write_problem()
        if problem:
            LOG.warning("database %s is read-only or cannot be written (%s): every C-STORE is refused with "
                        "0xA700 until it can; the server picks it up by itself once the storage is writable",
                        url, problem)
        LOG.info("codec model %s", describe_model(archive, settings.codec.model))
        count = serve_worker_count(settings, archive.database) if listener is None or listener.index == 0 else 0
        LOG.info("compression worker threads: %d%s", count,
                 "" if count else " (run `pacs-cae worker` processes to compress)")
        workers = WorkerThreads(archive.database, settings, archive.codecs, count)

        def ready(address: tuple[str, int]) -> None:
            LOG.info("%s listening on %s:%d", settings.server.ae_title, *address)
            if on_listening is not None:
                on_listening()

        serve_until_signalled(settings, archive, on_ready=ready, listener=listener)
    except OSError as exc:
        LOG.error("cannot listen on %s:%d: %s", settings.server.host, settings.server.port, exc)
        return 1
    finally:
        if workers is not None:
            workers.stop()
        archive.close()
    LOG.info("stopped")
    return 0
