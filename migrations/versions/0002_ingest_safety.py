"""Ingest safety: patients without a Patient ID are never merged, re-sends are recognised, refusals counted.

* ``patient``: the UNIQUE (patient_id, issuer) constraint becomes a unique index for rows *with* a Patient
  ID only, so each study received without one keeps its own patient row.
* ``instance.content_sha256``: digest of the received object; an identical re-send is told from a changed one.
* ``ingest_rejection``: one counter per refusal reason (``pacs-cae stats``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_HAS_PATIENT_ID = sa.text("patient_id <> ''")


def upgrade() -> None:
    with op.batch_alter_table("patient") as batch:
        batch.drop_constraint("uq_patient_patient_id_issuer", type_="unique")
    op.create_index("ux_patient_patient_id_issuer", "patient", ["patient_id", "issuer"], unique=True,
                    sqlite_where=_HAS_PATIENT_ID, postgresql_where=_HAS_PATIENT_ID)
    with op.batch_alter_table("instance") as batch:
        batch.add_column(sa.Column("content_sha256", sa.String(), nullable=True))
    op.create_table(
        "ingest_rejection",
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_detail", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("reason", name="pk_ingest_rejection"),
    )


def downgrade() -> None:
    op.drop_table("ingest_rejection")
    with op.batch_alter_table("instance") as batch:
        batch.drop_column("content_sha256")
    op.drop_index("ux_patient_patient_id_issuer", table_name="patient")
    with op.batch_alter_table("patient") as batch:
        batch.create_unique_constraint("uq_patient_patient_id_issuer", ["patient_id", "issuer"])
