"""Command-line interface: ``pacs-cae serve | worker | jobs | stats | db | import | export | verify | train | evaluate``.

Each command lives in its own module and registers itself on :data:`app` when imported here.
"""

from pacs_cae.cli.app import app
from pacs_cae.cli import serve, db, stats, verify, transfer, train, evaluate, worker  # noqa: F401  (registration)

__all__ = ["app"]
