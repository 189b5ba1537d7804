"""The schema comes from Alembic only, matches the ORM, and is enforced by the database."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from pacs_cae.config import load_settings
from pacs_cae.store import Database, SchemaOutOfDate, ensure_schema
from pacs_cae.store.migrate import head_revision
from pacs_cae.store.schema import Base

TABLES = {"codec_model", "patient", "study", "series", "instance", "instance_blob", "compression_job",
          "ingest_rejection",
          "alembic_version"}


def test_upgrade_creates_the_schema(database_url):
    db = Database(database_url)
    try:
        assert db.current_revision() is None
        assert set(inspect(db.engine).get_table_names()) == set()
        db.upgrade()
        assert db.current_revision() == head_revision()
        assert set(inspect(db.engine).get_table_names()) == TABLES
        db.upgrade()  # idempotent
        assert db.current_revision() == head_revision()
    finally:
        db.dispose()


def test_orm_matches_the_migrations(database):
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_query_columns_are_indexed(database):
    inspector = inspect(database.engine)
    indexed = {
        table: {col for ix in inspector.get_indexes(table) for col in ix["column_names"]}
        | {col for uq in inspector.get_unique_constraints(table) for col in uq["column_names"]}
        for table in ("patient", "study", "series", "instance")
    }
    assert {"patient_id", "patient_name", "birth_date"} <= indexed["patient"]
    assert {"study_instance_uid", "study_date", "accession_number", "patient_pk"} <= indexed["study"]
    assert {"series_instance_uid", "modality", "study_pk"} <= indexed["series"]
    assert {"sop_instance_uid", "derived_sop_instance_uid", "series_pk"} <= indexed["instance"]


def test_check_current_refuses_an_empty_database(database_url):
    db = Database(database_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="pacs-cae db upgrade"):
            db.check_current()
        db.upgrade()
        db.check_current()
    finally:
        db.dispose()


def test_check_current_refuses_an_older_revision(database):
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(SchemaOutOfDate, match="revision 0000.*pacs-cae db upgrade"):
        database.check_current()


def test_ensure_schema_upgrades_sqlite_but_only_checks_postgresql(database_url):
    settings = load_settings(overrides={"database.url": database_url})
    if database_url.startswith("sqlite"):
        db = ensure_schema(settings)
        assert db.current_revision() == head_revision()
        db.dispose()
        fresh = load_settings(overrides={"database.url": database_url + "2", "database.auto_upgrade": False})
        with pytest.raises(SchemaOutOfDate):
            ensure_schema(fresh)
    else:
        with pytest.raises(SchemaOutOfDate, match="pacs-cae db upgrade"):
            ensure_schema(settings)
        admin = Database(database_url)
        admin.upgrade()
        admin.dispose()
        ensure_schema(settings).dispose()


def test_foreign_keys_are_enforced(database):
    with pytest.raises(IntegrityError), database.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO study (patient_pk, study_instance_uid, created) VALUES (999, '1.2', CURRENT_TIMESTAMP)"
        ))


def test_delete_cascades_to_instances_and_blobs(database):
    with database.engine.begin() as conn:
        for sql in (
            "INSERT INTO patient (id, patient_id, issuer, created) VALUES (1, 'P', '', CURRENT_TIMESTAMP)",
            "INSERT INTO study (id, patient_pk, study_instance_uid, created) VALUES (1, 1, '1.2', CURRENT_TIMESTAMP)",
            "INSERT INTO series (id, study_pk, series_instance_uid, created) VALUES (1, 1, '1.2.3', CURRENT_TIMESTAMP)",
        ):
            conn.execute(text(sql))
        conn.execute(text(
            "INSERT INTO instance (id, series_pk, sop_instance_uid, sop_class_uid, transfer_syntax_uid, storage, "
            "original_pixel_bytes, stored_pixel_bytes, metadata_bytes, received_at, calling_aet) "
            "VALUES (1, 1, '1.2.3.4', '1.2.840.10008.5.1.4.1.1.4', '1.2.840.10008.1.2.1', 'lossless', 0, 0, 0, "
            "CURRENT_TIMESTAMP, '')"
        ))
        conn.execute(text("INSERT INTO instance_blob (instance_pk, metadata) VALUES (1, :m)"), {"m": b"\x00\x01"})
    with database.engine.begin() as conn:
        conn.execute(text("DELETE FROM patient"))
    with database.engine.connect() as conn:
        for table in ("study", "series", "instance", "instance_blob"):
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0


def test_sqlite_is_durable_and_enforces_keys(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'sub' / 'dir' / 'a.db'}")  # parent directories are created
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL: see pacs_cae/store/db.py
    finally:
        db.dispose()
    assert (tmp_path / "sub" / "dir" / "a.db").exists()
    full = Database(f"sqlite:///{tmp_path / 'full.db'}", sqlite_synchronous="full")  # power-loss durable
    try:
        with full.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    finally:
        full.dispose()
    with pytest.raises(ValueError, match="sqlite synchronous"):
        Database(f"sqlite:///{tmp_path / 'bad.db'}", sqlite_synchronous="off")


def test_session_commits_or_rolls_back(database):
    from pacs_cae.store.schema import Patient

    with database.session() as session:
        session.add(Patient(patient_id="A", issuer=""))
    with pytest.raises(RuntimeError), database.session() as session:
        session.add(Patient(patient_id="B", issuer=""))
        session.flush()
        raise RuntimeError("boom")
    with database.session(readonly=True) as session:
        assert [p.patient_id for p in session.query(Patient).all()] == ["A"]


def test_0002_keeps_existing_rows_and_lets_patients_without_an_id_stay_apart(database_url):
    db = Database(database_url)
    try:
        db.upgrade("0001")
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO patient (patient_id, issuer, patient_name, created) "
                              "VALUES ('P', '', 'Kept^Name', CURRENT_TIMESTAMP)"))
        db.upgrade()
        with db.engine.begin() as conn:
            assert conn.execute(text("SELECT patient_name FROM patient")).scalar() == "Kept^Name"
            for name in ("A^A", "B^B"):  # two patients without an ID: allowed now
                conn.execute(text("INSERT INTO patient (patient_id, issuer, patient_name, created) "
                                  "VALUES ('', '', :n, CURRENT_TIMESTAMP)"), {"n": name})
        with pytest.raises(IntegrityError), db.engine.begin() as conn:  # a Patient ID is still unique
            conn.execute(text("INSERT INTO patient (patient_id, issuer, created) VALUES ('P', '', CURRENT_TIMESTAMP)"))
    finally:
        db.dispose()
