"""Command-line interface: ``pacs-cae serve | worker | jobs | stats | db | import | export | verify | train |
evaluate | export-model``.

Each command lives in its own module and registers itself on :data:`app` when imported here.
"""

from pacs_cae.cli import db, evaluate, export_model, serve, stats, train, transfer, verify, worker  # noqa: F401  (registration)
from pacs_cae.cli.app import app

__all__ = ["app"]
