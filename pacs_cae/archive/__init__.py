"""The archive's use cases: ingest, query, retrieve, stats; the only layer combining codec, dicom and store.

``from pacs_cae.archive import Archive`` is the entry point (see ``docs/internals.md``). The heavy imports
(torch via the codec, SQLAlchemy) happen on first use of those names, so ``pacs_cae.archive.errors`` stays
cheap to import for the network layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pacs_cae.archive.errors import (
    ArchiveError,
    CannotUnderstand,
    DataSetMismatch,
    NotAuthorized,
    OutOfResources,
    UnknownDestination,
)

if TYPE_CHECKING:
    from pacs_cae.archive.ingest import StoreOutcome
    from pacs_cae.archive.service import Archive, ArchiveCodecs

_LAZY = {"Archive": "service", "ArchiveCodecs": "service", "StoreOutcome": "ingest"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"pacs_cae.archive.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'pacs_cae.archive' has no attribute {name!r}")


__all__ = [
    "Archive",
    "ArchiveCodecs",
    "ArchiveError",
    "CannotUnderstand",
    "DataSetMismatch",
    "NotAuthorized",
    "OutOfResources",
    "StoreOutcome",
    "UnknownDestination",
]
