"""Count refused instances by reason, so an admin sees in ``pacs-cae stats`` what the log says one by one.

The counter is written in its own short transaction after the refusal (the refused instance's own unit of
work was rolled back), with one atomic ``INSERT ... ON CONFLICT DO UPDATE`` so parallel associations never
lose an increment. Failing to count is logged and never changes the answer to the peer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pacs_cae.store.schema import IngestRejection, utcnow

if TYPE_CHECKING:
    from pacs_cae.store.db import Database

LOG = logging.getLogger(__name__)

#: Longest detail kept per reason (the log keeps the full text).
MAX_DETAIL = 500


def count_rejection(database: Database, reason: str, detail: str = "") -> None:
    """Add one to ``reason``'s counter; never raises (a broken database already answered the peer)."""
    values: dict[str, Any] = {"reason": reason, "count": 1, "last_at": utcnow(), "last_detail": detail[:MAX_DETAIL]}
    insert = postgresql.insert if database.dialect == "postgresql" else sqlite.insert
    stmt = insert(IngestRejection).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[IngestRejection.reason],
        set_={"count": IngestRejection.count + 1, "last_at": values["last_at"],
              "last_detail": values["last_detail"]},
    )
    try:
        with database.session() as session:
            session.execute(stmt)
    except SQLAlchemyError as exc:
        LOG.warning("could not count the %s refusal: %s", reason, exc)


def rejection_counts(session: Session) -> dict[str, int]:
    """``{reason: count}`` for every reason seen."""
    rows = session.execute(select(IngestRejection.reason, IngestRejection.count)).all()
    return {reason: int(n) for reason, n in sorted(rows)}


__all__ = ["count_rejection", "rejection_counts"]
