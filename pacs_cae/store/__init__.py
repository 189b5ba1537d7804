"""SQL storage: schema, engine/session handling, Alembic migrations, and the repository the use cases call."""

from pacs_cae.store.db import Database, SchemaOutOfDate, ensure_schema
from pacs_cae.store.record import InstanceRecord, InvalidRecord
from pacs_cae.store.repository import (
    QUALITY_GATE_REASON,
    HierarchyConflict,
    StoredInstance,
    load_instance_rows,
    store_instance,
)
from pacs_cae.store.schema import CodecModel, Instance, InstanceBlob, Patient, Series, Study

__all__ = [
    "QUALITY_GATE_REASON",
    "CodecModel",
    "Database",
    "HierarchyConflict",
    "Instance",
    "InstanceBlob",
    "InstanceRecord",
    "InvalidRecord",
    "Patient",
    "SchemaOutOfDate",
    "Series",
    "StoredInstance",
    "Study",
    "ensure_schema",
    "load_instance_rows",
    "store_instance",
]
