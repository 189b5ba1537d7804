"""Initial schema: codec models, patient/study/series/instance index, instance blobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "codec_model",
        sa.Column("model_id", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("architecture", sa.String(), nullable=False),
        sa.Column("first_used", _tz(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", name="pk_codec_model"),
    )
    op.create_table(
        "patient",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(), nullable=False),
        sa.Column("issuer", sa.String(), nullable=False),
        sa.Column("patient_name", sa.String(), nullable=True),
        sa.Column("birth_date", sa.String(), nullable=True),
        sa.Column("sex", sa.String(), nullable=True),
        sa.Column("created", _tz(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_patient"),
        sa.UniqueConstraint("patient_id", "issuer", name="uq_patient_patient_id_issuer"),
    )
    op.create_index("ix_patient_patient_name", "patient", ["patient_name"])
    op.create_index("ix_patient_birth_date", "patient", ["birth_date"])

    op.create_table(
        "study",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(), nullable=False),
        sa.Column("study_date", sa.String(), nullable=True),
        sa.Column("study_time", sa.String(), nullable=True),
        sa.Column("accession_number", sa.String(), nullable=True),
        sa.Column("study_id", sa.String(), nullable=True),
        sa.Column("referring_physician_name", sa.String(), nullable=True),
        sa.Column("study_description", sa.String(), nullable=True),
        sa.Column("created", _tz(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_study"),
        sa.ForeignKeyConstraint(
            ["patient_pk"], ["patient.id"], name="fk_study_patient_pk_patient", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("study_instance_uid", name="uq_study_study_instance_uid"),
    )
    for column in ("patient_pk", "study_date", "accession_number", "study_id"):
        op.create_index(f"ix_study_{column}", "study", [column])

    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(), nullable=False),
        sa.Column("modality", sa.String(), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.String(), nullable=True),
        sa.Column("body_part_examined", sa.String(), nullable=True),
        sa.Column("series_date", sa.String(), nullable=True),
        sa.Column("series_time", sa.String(), nullable=True),
        sa.Column("protocol_name", sa.String(), nullable=True),
        sa.Column("created", _tz(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.ForeignKeyConstraint(
            ["study_pk"], ["study.id"], name="fk_series_study_pk_study", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("series_instance_uid", name="uq_series_series_instance_uid"),
    )
    for column in ("study_pk", "modality", "series_number"):
        op.create_index(f"ix_series_{column}", "series", [column])

    op.create_table(
        "instance",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(), nullable=False),
        sa.Column("derived_sop_instance_uid", sa.String(), nullable=True),
        sa.Column("sop_class_uid", sa.String(), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("content_date", sa.String(), nullable=True),
        sa.Column("content_time", sa.String(), nullable=True),
        sa.Column("transfer_syntax_uid", sa.String(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("columns", sa.Integer(), nullable=True),
        sa.Column("bits_allocated", sa.Integer(), nullable=True),
        sa.Column("bits_stored", sa.Integer(), nullable=True),
        sa.Column("pixel_representation", sa.Integer(), nullable=True),
        sa.Column("photometric_interpretation", sa.String(), nullable=True),
        sa.Column("number_of_frames", sa.Integer(), nullable=True),
        sa.Column("storage", sa.String(), nullable=False),
        sa.Column("codec_model_id", sa.String(), nullable=True),
        sa.Column("fallback_reason", sa.String(), nullable=True),
        sa.Column("original_pixel_bytes", sa.BigInteger(), nullable=False),
        sa.Column("stored_pixel_bytes", sa.BigInteger(), nullable=False),
        sa.Column("metadata_bytes", sa.BigInteger(), nullable=False),
        sa.Column("received_at", _tz(), nullable=False),
        sa.Column("calling_aet", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instance"),
        sa.ForeignKeyConstraint(
            ["series_pk"], ["series.id"], name="fk_instance_series_pk_series", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["codec_model_id"], ["codec_model.model_id"], name="fk_instance_codec_model_id_codec_model"
        ),
        sa.UniqueConstraint("sop_instance_uid", name="uq_instance_sop_instance_uid"),
    )
    for column in ("series_pk", "derived_sop_instance_uid", "sop_class_uid", "instance_number", "storage"):
        op.create_index(f"ix_instance_{column}", "instance", [column])

    op.create_table(
        "instance_blob",
        sa.Column("instance_pk", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.LargeBinary(), nullable=False),
        sa.Column("pixels", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("instance_pk", name="pk_instance_blob"),
        sa.ForeignKeyConstraint(
            ["instance_pk"], ["instance.id"], name="fk_instance_blob_instance_pk_instance", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    for table in ("instance_blob", "instance", "series", "study", "patient", "codec_model"):
        op.drop_table(table)
