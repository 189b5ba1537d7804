"""C-FIND matching and C-GET/C-MOVE instance lookup, as SQL on the indexed columns.

``find`` answers one Dataset per matching entity at the asked level holding exactly the requested keys (values
filled in, counts computed when asked). ``locate`` turns a retrieve identifier into the instances to send. At
IMAGE level both speak the UID that retrieve delivers: a CAE instance is served under its derived lossy UID
when ``lossy_uid == "derive"``, and either UID is accepted when matching. Matching rules: archive/matching.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from pacs_cae.archive.errors import ArchiveError
from pacs_cae.archive.matching import Column, Kind, MatchError, condition, has_wildcard, is_universal
from pacs_cae.archive.query_keys import KEYS, LEVELS, MODEL_LEVELS, UNIQUE_KEYS, level_index
from pacs_cae.dicom.metadata import decode_metadata
from pacs_cae.dicom.rebuild import LOSSY_KEYS, LossySource, delivered_lossy_attributes
from pacs_cae.store.schema import Instance, InstanceBlob, Patient, Series, Study
from pacs_cae.vocabulary import LossyUidPolicy, QueryModel, StorageKind

_BATCH = 500
_ENTITIES = {"PATIENT": Patient, "STUDY": Study, "SERIES": Series, "IMAGE": Instance}


class QueryError(ArchiveError):
    """An identifier the archive cannot search with: 0xA900 (does not match the SOP class: missing or
    invalid QueryRetrieveLevel or unique key) or 0xC000 (unable to process: an unparsable value)."""

    default_status = 0xA900


@dataclass(frozen=True)
class InstanceRef:
    """One instance a C-GET/C-MOVE will send, and the UID it is sent under."""

    id: int
    sop_class_uid: str
    sop_instance_uid: str  # as received
    served_uid: str  # what the SCU gets: the derived lossy UID or the received one
    storage: str
    transfer_syntax_uid: str


def served_uid(sop_instance_uid: str, derived_uid: str | None, storage: str, lossy_uid: str) -> str:
    """The SOP Instance UID retrieve delivers for an instance (PS3.3 C.7.6.1.1.5 for lossy copies)."""
    if lossy_uid == LossyUidPolicy.DERIVE and storage == StorageKind.CAE and derived_uid:
        return derived_uid
    return sop_instance_uid


def find(
    session: Session,
    query_model: QueryModel,
    identifier: Dataset,
    *,
    lossy_uid: str = LossyUidPolicy.DERIVE,
    retrieve_aet: str | None = None,
) -> Iterator[Dataset]:
    """The C-FIND responses for ``identifier`` in Patient (``"P"``) or Study (``"S"``) Root.

    Validates before yielding anything (raises :class:`QueryError`). The session must stay open while
    the iterator is consumed.
    """
    level = _level(query_model, identifier)
    _require_upper_unique_keys(query_model, level, identifier)
    stmt = _select(level).where(*_conditions(level, identifier))
    rows = session.execute(stmt).all()
    return _responses(session, level, identifier, rows, lossy_uid, retrieve_aet)


def locate(session: Session, query_model: QueryModel, identifier: Dataset, *, lossy_uid: str = LossyUidPolicy.DERIVE) -> list[InstanceRef]:
    """The instances under the entities a C-GET/C-MOVE identifier names, in study/series/instance order.

    The unique key of the asked level is required (single value or UID list, no wildcards); unique keys of
    the levels above restrict the result when present. Other keys are ignored, as PS3.4 C.4.2.2.1 asks.
    """
    level = _level(query_model, identifier)
    conditions: list[ColumnElement[bool]] = []
    for lvl in MODEL_LEVELS[query_model][: MODEL_LEVELS[query_model].index(level) + 1]:
        keyword = UNIQUE_KEYS[lvl]
        value = _value_text(identifier, keyword)
        if value is None or is_universal(value):
            if lvl == level:
                raise QueryError(f"a {level} level retrieve needs a value for {keyword}")
            continue
        if has_wildcard(value):
            raise QueryError(f"{keyword}: wildcards are not allowed in a retrieve identifier")
        conditions.append(_key_condition(keyword, value))
    stmt = (
        select(Instance)
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
        .join(Patient, Patient.id == Study.patient_pk)
        .where(*conditions)
        .order_by(Study.id, Series.id, Instance.id)
    )
    return [
        InstanceRef(
            id=inst.id,
            sop_class_uid=inst.sop_class_uid,
            sop_instance_uid=inst.sop_instance_uid,
            served_uid=served_uid(inst.sop_instance_uid, inst.derived_sop_instance_uid, inst.storage, lossy_uid),
            storage=inst.storage,
            transfer_syntax_uid=inst.transfer_syntax_uid,
        )
        for inst in session.scalars(stmt)
    ]


# -- identifier parsing ------------------------------------------------------------------------------------


def _level(query_model: QueryModel, identifier: Dataset) -> str:
    if query_model not in MODEL_LEVELS:
        raise ValueError(f"query_model must be 'P' or 'S', got {query_model!r}")
    level = _value_text(identifier, "QueryRetrieveLevel")
    if not level:
        raise QueryError("the identifier has no QueryRetrieveLevel")
    level = level.upper()
    if level not in MODEL_LEVELS[query_model]:
        root = "Patient Root" if query_model == QueryModel.PATIENT_ROOT else "Study Root"
        raise QueryError(f"QueryRetrieveLevel {level!r} is not valid for {root} (expected one of "
                         f"{', '.join(MODEL_LEVELS[query_model])})")
    return level


def _require_upper_unique_keys(query_model: QueryModel, level: str, identifier: Dataset) -> None:
    """Hierarchical search: each level above the asked one is named by its unique key (no wildcards)."""
    levels = MODEL_LEVELS[query_model]
    for lvl in levels[: levels.index(level)]:
        keyword = UNIQUE_KEYS[lvl]
        value = _value_text(identifier, keyword)
        if lvl == "SERIES" and (value is None or is_universal(value)):
            continue  # an IMAGE query across a study's series (Orthanc sends it): answered, not refused
        if value is None or is_universal(value) or has_wildcard(value):
            raise QueryError(f"a {level} level query needs a single value for {keyword} (the {lvl} unique key)")


def _value_text(identifier: Dataset, keyword: str) -> str | None:
    """An identifier value as DICOM text (multiple values joined with backslash); None when absent."""
    if keyword not in identifier:
        return None
    value = identifier[keyword].value
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


# -- SQL ---------------------------------------------------------------------------------------------------


def _select(level: str) -> Select:
    """The asked level's entity with its ancestors joined (Study Root STUDY queries use patient keys too)."""
    depth = level_index(level)
    entities: list[Any] = [_ENTITIES[lvl] for lvl in LEVELS[: depth + 1]]
    stmt = select(*entities)
    if depth >= 1:
        stmt = stmt.join(Study, Study.patient_pk == Patient.id)
    if depth >= 2:
        stmt = stmt.join(Series, Series.study_pk == Study.id)
    if depth >= 3:
        stmt = stmt.join(Instance, Instance.series_pk == Series.id)
    return stmt.order_by(*(entity.id for entity in entities))


def _conditions(level: str, identifier: Dataset) -> list[ColumnElement[bool]]:
    conditions = []
    depth = level_index(level)
    for elem in identifier:
        key = KEYS.get(elem.keyword)
        if key is None or not key.matchable or level_index(key.level) > depth:
            continue  # unsupported, return-only, or below the asked level: returned empty, never matched
        value = _value_text(identifier, key.keyword)
        if value is None or is_universal(value):
            continue
        conditions.append(_key_condition(key.keyword, value))
    return conditions


def _matched(column: Column, kind: Kind, value: str) -> ColumnElement[bool]:
    """The condition for a value the caller knows is not universal."""
    result = condition(column, kind, value)
    assert result is not None  # callers skip universal values
    return result


def _key_condition(keyword: str, value: str) -> ColumnElement[bool]:
    key = KEYS[keyword]
    try:
        if keyword == "SOPInstanceUID":
            return or_(
                _matched(Instance.sop_instance_uid, "uid", value),
                _matched(Instance.derived_sop_instance_uid, "uid", value),
            )
        if keyword == "ModalitiesInStudy":
            return exists().where(Series.study_pk == Study.id, _matched(Series.modality, "text", value))
        if keyword == "SOPClassesInStudy":
            return exists().where(
                Series.study_pk == Study.id,
                Instance.series_pk == Series.id,
                _matched(Instance.sop_class_uid, "uid", value),
            )
        assert key.column is not None  # matchable keys have a column
        result = condition(key.column, key.kind, value)
    except MatchError as exc:
        raise QueryError(f"{keyword}: {exc}", status=0xC000) from None
    assert result is not None  # callers skip universal values
    return result


# -- responses ---------------------------------------------------------------------------------------------


def _responses(
    session: Session,
    level: str,
    identifier: Dataset,
    rows: Sequence[Any],
    lossy_uid: str,
    retrieve_aet: str | None,
) -> Iterator[Dataset]:
    depth = level_index(level)
    wanted = {e.keyword for e in identifier if e.keyword in KEYS}
    for start in range(0, len(rows), _BATCH):
        batch = rows[start:start + _BATCH]
        computed = _computed(session, depth, wanted, batch)
        for row in batch:
            by_level = dict(zip(LEVELS, row))
            yield _response(identifier, level, by_level, computed, lossy_uid, retrieve_aet)


def _response(
    identifier: Dataset,
    level: str,
    by_level: dict[str, Any],
    computed: dict[tuple[str, int], Any],
    lossy_uid: str,
    retrieve_aet: str | None,
) -> Dataset:
    depth = level_index(level)
    out = Dataset()
    for elem in identifier:
        if elem.tag.is_private or elem.tag.element == 0 or elem.tag.group in (0x0000, 0x0002):
            continue
        keyword = elem.keyword
        if keyword == "SpecificCharacterSet":
            continue  # set below, from the values actually returned
        value: Any = None
        key = KEYS.get(keyword)
        if keyword == "QueryRetrieveLevel":
            value = level
        elif keyword == "InstanceAvailability":
            value = "ONLINE"
        elif keyword == "RetrieveAETitle":
            value = retrieve_aet
        elif key is not None and level_index(key.level) <= depth:
            owner = by_level[key.level]
            if keyword == "SOPInstanceUID":
                value = served_uid(owner.sop_instance_uid, owner.derived_sop_instance_uid, owner.storage, lossy_uid)
            elif key.column is not None:
                value = getattr(owner, key.column.key)
            else:
                value = computed.get((keyword, owner.id), 0 if key.kind == "int" else None)
        out.add(_element(elem, value))
    if "SpecificCharacterSet" in identifier or _needs_unicode(out):
        out.SpecificCharacterSet = "ISO_IR 192" if _needs_unicode(out) else identifier.SpecificCharacterSet
    return out


def _element(requested: DataElement, value: Any) -> DataElement:
    vr = requested.VR
    if vr in ("UN", None) or " or " in str(vr):
        try:
            vr = dictionary_VR(requested.tag)
        except KeyError:
            vr = "UN"
    if vr == "SQ":
        return DataElement(requested.tag, "SQ", DicomSequence())
    if isinstance(value, str) and "\\" in value:
        value = value.split("\\")
    return DataElement(requested.tag, vr, value)


def _needs_unicode(ds: Dataset) -> bool:
    """True when a value cannot be sent in the default repertoire (ASCII)."""
    for elem in ds:
        values = elem.value if isinstance(elem.value, (list, MultiValue)) else [elem.value]
        if any(v is not None and not str(v).isascii() for v in values):
            return True
    return False


def _computed(session: Session, depth: int, wanted: set[str], rows: Sequence[Any]) -> dict[tuple[str, int], Any]:
    """Counts and study-wide lists for the requested keys, for one batch of rows (keyed by (keyword, pk))."""
    out: dict[tuple[str, int], Any] = {}
    ids = {lvl: sorted({row[i].id for row in rows}) for i, lvl in enumerate(LEVELS[: depth + 1])}

    def counts(keyword: str, owner_col: Any, count_col: Any, stmt: Select[Any], level_ids: list[int]) -> None:
        if keyword not in wanted or not level_ids:
            return
        query = stmt.add_columns(owner_col, func.count(count_col)).where(owner_col.in_(level_ids))
        for owner, n in session.execute(query.group_by(owner_col)).all():
            out[(keyword, owner)] = n

    patients, studies, series = ids.get("PATIENT", []), ids.get("STUDY", []), ids.get("SERIES", [])
    study_series = select().select_from(Study).join(Series, Series.study_pk == Study.id)
    counts("NumberOfPatientRelatedStudies", Study.patient_pk, Study.id, select().select_from(Study), patients)
    counts("NumberOfPatientRelatedSeries", Study.patient_pk, Series.id, study_series, patients)
    counts("NumberOfPatientRelatedInstances", Study.patient_pk, Instance.id,
           study_series.join(Instance, Instance.series_pk == Series.id), patients)
    counts("NumberOfStudyRelatedSeries", Series.study_pk, Series.id, select().select_from(Series), studies)
    counts("NumberOfStudyRelatedInstances", Series.study_pk, Instance.id,
           select().select_from(Series).join(Instance, Instance.series_pk == Series.id), studies)
    counts("NumberOfSeriesRelatedInstances", Instance.series_pk, Instance.id, select().select_from(Instance), series)

    lists = {
        "ModalitiesInStudy": select(Series.study_pk, Series.modality).where(Series.modality.is_not(None)),
        "SOPClassesInStudy": select(Series.study_pk, Instance.sop_class_uid).join(
            Instance, Instance.series_pk == Series.id
        ),
    }
    if depth == 3 and wanted & set(LOSSY_KEYS):
        out.update(_delivered_lossy(session, [row[3] for row in rows], wanted & set(LOSSY_KEYS)))
    for keyword, stmt in lists.items():
        if keyword in wanted and studies:
            grouped: dict[int, set[str]] = defaultdict(set)
            for study_pk, item in session.execute(stmt.where(Series.study_pk.in_(studies)).distinct()).all():
                grouped[study_pk].update(str(item).split("\\"))
            for study_pk, items in grouped.items():
                out[(keyword, study_pk)] = sorted(items)
    return out


def _delivered_lossy(session: Session, instances: Sequence[Instance], wanted: set[str]) -> dict[tuple[str, int], Any]:
    """ImageType and the lossy attributes as C-GET delivers each instance (from its stored metadata)."""
    by_id = {inst.id: inst for inst in instances}
    out: dict[tuple[str, int], Any] = {}
    blobs = session.execute(select(InstanceBlob.instance_pk, InstanceBlob.metadata_blob)
                            .where(InstanceBlob.instance_pk.in_(list(by_id)))).all()
    for pk, metadata_blob in blobs:
        inst = by_id[pk]
        stored = decode_metadata(metadata_blob)
        cae = None
        if inst.storage == StorageKind.CAE:
            cae = LossySource(model_id=inst.codec_model_id or "", blob_bytes=inst.stored_pixel_bytes,
                              received_syntax=str(stored.transfer_syntax),
                              received_pixel_bytes=inst.original_pixel_bytes)
        attrs = delivered_lossy_attributes(stored.dataset, str(stored.transfer_syntax), inst.original_pixel_bytes,
                                           cae)
        for keyword in wanted:
            value = attrs.get(keyword)
            if value is not None:
                out[(keyword, pk)] = "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)
    return out


__all__ = ["InstanceRef", "QueryError", "find", "locate", "served_uid"]
