"""Deferred compression: one compression job per series (issue 12).

Revision ID: 0003_compression_jobs
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_compression_jobs"
down_revision = "0002"
branch_labels = None
depends_on = None


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "compression_job",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("rule", sa.String(), nullable=False),
        sa.Column("not_before", _tz(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("claimed_generation", sa.Integer(), nullable=True),
        sa.Column("lease_owner", sa.String(), nullable=True),
        sa.Column("lease_expires", _tz(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("compressed_instances", sa.Integer(), nullable=False),
        sa.Column("saved_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created", _tz(), nullable=False),
        sa.Column("updated", _tz(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_compression_job"),
        sa.ForeignKeyConstraint(["series_pk"], ["series.id"], name="fk_compression_job_series_pk_series",
                                ondelete="CASCADE"),
        sa.UniqueConstraint("series_pk", name="uq_compression_job_series_pk"),
    )
    op.create_index("ix_compression_job_state_not_before", "compression_job", ["state", "not_before"])


def downgrade() -> None:
    op.drop_index("ix_compression_job_state_not_before", table_name="compression_job")
    op.drop_table("compression_job")
