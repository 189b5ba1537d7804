"""store_instance: one row per SOP Instance UID whatever the policy, concurrency or re-parenting."""

from __future__ import annotations

import threading

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from sqlalchemy import func, select

from pacs_cae.archive.received import record_from_dataset
from pacs_cae.store import (
    CodecModel,
    HierarchyConflict,
    Instance,
    InstanceBlob,
    Patient,
    Series,
    Study,
    load_instance_rows,
    store_instance,
)


def dataset(sop: str, series: str = "1.9.1.1", study: str = "1.9.1", patient: str = "P1", **attrs) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.80"
    ds.PatientID, ds.PatientName = patient, "Test^Patient"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.Modality, ds.StudyDate = "MR", "20240101"
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def store(db, ds, policy="replace", metadata=b"meta", pixels=b"pix", **storage):
    with db.session() as session:
        return store_instance(session, record_from_dataset(ds, **storage), metadata, pixels, policy)[0]


def count(db, entity) -> int:
    with db.session(readonly=True) as session:
        return session.scalar(select(func.count()).select_from(entity))


def blob_of(db, sop):
    with db.session(readonly=True) as session:
        inst = session.scalars(select(Instance).where(Instance.sop_instance_uid == sop)).one()
        blob = session.get(InstanceBlob, inst.id)
        return inst, blob


def test_store_creates_the_hierarchy_once(database):
    assert store(database, dataset("1.9.1.1.1")) == "stored"
    assert store(database, dataset("1.9.1.1.2")) == "stored"
    assert store(database, dataset("1.9.1.2.1", series="1.9.1.2")) == "stored"
    assert [count(database, e) for e in (Patient, Study, Series, Instance, InstanceBlob)] == [1, 1, 2, 3, 3]
    inst, blob = blob_of(database, "1.9.1.1.1")
    assert (inst.metadata_bytes, inst.stored_pixel_bytes, blob.metadata_blob, blob.pixel_blob) == (
        4, 3, b"meta", b"pix")


def test_replace_policy_overwrites_in_place(database):
    store(database, dataset("1.9.1.1.1", InstanceNumber=1))
    first, _ = blob_of(database, "1.9.1.1.1")
    assert store(database, dataset("1.9.1.1.1", InstanceNumber=5), metadata=b"new", pixels=None,
                 calling_aet="MOD2") == "replaced"
    inst, blob = blob_of(database, "1.9.1.1.1")
    assert count(database, Instance) == 1 and inst.id == first.id
    assert (inst.instance_number, inst.calling_aet, blob.metadata_blob, blob.pixel_blob) == (5, "MOD2", b"new", None)


def test_keep_first_policy_leaves_the_first(database):
    store(database, dataset("1.9.1.1.1", InstanceNumber=1))
    assert store(database, dataset("1.9.1.1.1", InstanceNumber=5), policy="keep-first", metadata=b"x") == "kept-first"
    inst, blob = blob_of(database, "1.9.1.1.1")
    assert count(database, Instance) == 1 and inst.instance_number == 1 and blob.metadata_blob == b"meta"


def hierarchy(db) -> list[tuple[str, str, str, str]]:
    """(patient ID, study UID, series UID, SOP instance UID) of every stored instance."""
    with db.session(readonly=True) as session:
        return sorted(tuple(row) for row in session.execute(
            select(Patient.patient_id, Study.study_instance_uid, Series.series_instance_uid,
                   Instance.sop_instance_uid)
            .join(Study, Study.patient_pk == Patient.id).join(Series, Series.study_pk == Study.id)
            .join(Instance, Instance.series_pk == Series.id)
        ).all())


def test_resend_under_another_series_is_refused_and_moves_nothing(database):
    store(database, dataset("1.9.1.1.1", patient="OLD", study="1.9.1", series="1.9.1.1"))
    before = hierarchy(database)
    with pytest.raises(HierarchyConflict) as refused:
        store(database, dataset("1.9.1.1.1", patient="OLD", study="1.9.2", series="1.9.2.1"))
    assert refused.value.reason == "hierarchy-conflict"
    assert hierarchy(database) == before
    assert count(database, Study) == 1 and count(database, Series) == 1


def test_instance_naming_a_study_of_another_patient_is_refused(database):
    """One instance with another Patient ID must never re-parent the stored study (issue 9, item 1)."""
    store(database, dataset("1.9.1.1.1", patient="CRASHCT"))
    store(database, dataset("1.9.1.1.2", patient="CRASHCT"))
    before = hierarchy(database)
    for policy in ("replace", "keep-first"):
        with pytest.raises(HierarchyConflict) as refused:
            store(database, dataset("1.9.1.1.3", patient="OTHER"), policy=policy)
        assert refused.value.reason == "patient-conflict"
        with pytest.raises(HierarchyConflict):  # a re-send of a stored UID under the other patient, too
            store(database, dataset("1.9.1.1.1", patient="OTHER"), policy="replace")
    with pytest.raises(HierarchyConflict):
        store(database, dataset("1.9.1.1.4", patient="CRASHCT", IssuerOfPatientID="OTHER-HOSPITAL"))
    assert hierarchy(database) == before
    assert count(database, Patient) == 1


def test_configured_identity_attributes_are_compared(database):
    store(database, dataset("1.9.1.1.1", PatientBirthDate="19700101"))
    other_name = dataset("1.9.1.1.2", PatientName="Someone^Else")
    store(database, other_name)  # by default Patient ID + issuer decide
    with pytest.raises(HierarchyConflict, match="patient_name"), database.session() as session:
        store_instance(session, record_from_dataset(dataset("1.9.1.1.3", PatientName="Someone^Else")),
                        b"m", b"p", identity_attributes=["PatientName"])
    same = dataset("1.9.1.1.4", PatientName="TEST^PATIENT^^")  # case and empty components do not matter
    with database.session() as session:
        assert store_instance(session, record_from_dataset(same), b"m", b"p",
                              identity_attributes=["PatientName", "PatientBirthDate"])[0] == "stored"
    with pytest.raises(HierarchyConflict, match="birth_date"), database.session() as session:  # a new study too
        store_instance(session, record_from_dataset(
            dataset("1.9.2.1.1", study="1.9.2", series="1.9.2.1", PatientBirthDate="19800101")),
            b"m", b"p", identity_attributes=["PatientBirthDate"])


def test_patients_without_an_id_are_never_merged(database):
    """Two studies with an empty Patient ID keep two patient rows and both names (issue 9, item 2)."""
    store(database, dataset("1.9.1.1.1", patient="", study="1.9.1", series="1.9.1.1", PatientName="ALICE^A"))
    store(database, dataset("1.9.2.1.1", patient="", study="1.9.2", series="1.9.2.1", PatientName="BOB^B"))
    store(database, dataset("1.9.1.1.2", patient="", study="1.9.1", series="1.9.1.1", PatientName="ALICE^A"))
    with pytest.raises(HierarchyConflict):  # without an ID the name identifies the patient of the study
        store(database, dataset("1.9.1.1.3", patient="", study="1.9.1", series="1.9.1.1", PatientName="EVE^E"))
    with database.session(readonly=True) as session:
        rows = session.execute(select(Patient.patient_name, Study.study_instance_uid)
                               .join(Study, Study.patient_pk == Patient.id)).all()
    assert sorted(tuple(r) for r in rows) == [("ALICE^A", "1.9.1"), ("BOB^B", "1.9.2")]


def test_stored_attributes_are_filled_never_overwritten(database):
    store(database, dataset("1.9.1.1.1", StudyDescription="first"))
    store(database, dataset("1.9.1.1.2", StudyDescription="changed", PatientName="Changed^Name"))
    third = dataset("1.9.1.1.3")
    del third.PatientName
    store(database, third)  # absent values do not erase
    first = dataset("1.9.2.1.1", study="1.9.2", series="1.9.2.1")
    store(database, first)
    store(database, dataset("1.9.2.1.2", study="1.9.2", series="1.9.2.1", PatientSex="F"))  # an empty field fills
    with database.session(readonly=True) as session:
        assert session.scalars(select(Study.study_description)).all() == ["first", None]
        assert session.scalars(select(Patient.patient_name)).one() == "Test^Patient"
        assert session.scalars(select(Patient.sex)).one() == "F"


def test_identical_resend_is_recognised_whatever_the_policy(database):
    def put(content: str, policy: str) -> str:
        with database.session() as session:
            return store_instance(session, record_from_dataset(dataset("1.9.1.1.1")), b"m", b"p",
                                  policy, content_sha256=content)[0]  # type: ignore[arg-type]

    assert put("aa", "keep-first") == "stored"
    assert put("aa", "keep-first") == "identical"
    assert put("aa", "replace") == "identical"
    assert put("bb", "keep-first") == "kept-first"
    assert put("bb", "replace") == "replaced"
    assert put("bb", "keep-first") == "identical"


def test_store_instance_names_the_series_it_wrote_to(database):
    """What ingest enqueues the series' compression job with; nothing written, no series."""
    def put(sop: str, content: str, policy: str = "keep-first") -> tuple[str, int | None]:
        with database.session() as session:
            return store_instance(session, record_from_dataset(dataset(sop)), b"m", b"p", policy,
                                  content_sha256=content)  # type: ignore[arg-type]

    result, series_pk = put("1.9.1.1.1", "aa")
    with database.session(readonly=True) as session:
        assert result == "stored" and series_pk == session.scalars(select(Series.id)).one()
    assert put("1.9.1.1.2", "bb") == ("stored", series_pk)
    assert put("1.9.1.1.2", "bb") == ("identical", None)
    assert put("1.9.1.1.2", "cc") == ("kept-first", None)
    assert put("1.9.1.1.2", "cc", "replace") == ("replaced", series_pk)


def test_codec_model_row_is_recorded_once(database):
    for sop in ("1.9.1.1.1", "1.9.1.1.2"):
        store(database, dataset(sop), storage="cae", codec_model_id="cae-paper", codec_sha256="ff" * 32,
              codec_architecture="CAE", derived_sop_instance_uid="2.25." + sop.replace(".", ""))
    with database.session(readonly=True) as session:
        (model,) = session.scalars(select(CodecModel)).all()
        assert (model.model_id, model.sha256, model.architecture) == ("cae-paper", "ff" * 32, "CAE")


def test_invalid_storage_fields_are_refused(database):
    with pytest.raises(ValueError):
        store(database, dataset("1.9.1.1.1"), storage="zip")
    with pytest.raises(ValueError):
        store(database, dataset("1.9.1.1.1"), storage="cae")  # no codec model
    with pytest.raises(ValueError):
        store(database, dataset("1.9.1.1.1"), policy="overwrite")


@pytest.mark.parametrize("policy", ["replace", "keep-first"])
def test_concurrent_associations_never_duplicate(database, policy):
    """Eight associations send the same new series at once; every row exists exactly once."""
    sops = [f"1.9.1.1.{i}" for i in range(1, 7)]
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def sender() -> None:
        try:
            barrier.wait()
            for sop in sops:
                results.append(store(database, dataset(sop), policy=policy))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [count(database, e) for e in (Patient, Study, Series, Instance, InstanceBlob)] == [1, 1, 1, 6, 6]
    assert results.count("stored") == 6
    assert results.count("replaced" if policy == "replace" else "kept-first") == 7 * 6


def test_load_instance_rows_keeps_the_order_and_skips_missing(database):
    store(database, dataset("1.9.1.1.1"), pixels=b"one")
    store(database, dataset("1.9.1.1.2"), pixels=None, storage="none")
    with database.session(readonly=True) as session:
        ids = dict(session.execute(select(Instance.sop_instance_uid, Instance.id)).all())
        rows = load_instance_rows(session, [ids["1.9.1.1.2"], 99999, ids["1.9.1.1.1"]])
    assert [r.sop_instance_uid for r in rows] == ["1.9.1.1.2", "1.9.1.1.1"]
    assert (rows[0].pixel_blob, rows[0].storage, rows[1].pixel_blob) == (None, "none", b"one")
    assert rows[1].series_instance_uid == "1.9.1.1" and rows[1].study_instance_uid == "1.9.1"
    assert rows[1].transfer_syntax_uid == "1.2.840.10008.1.2.4.80"
