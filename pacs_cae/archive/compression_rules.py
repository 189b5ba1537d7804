"""Which stored instances get a compression job, and when it is due (``[[compression.rules]]``).

Modelled on dcm4chee's archive compression rules: conditions on the instance (modality, SOP class, body part,
the calling AE that sent it) and on time (a delay after the series' latest instance, and a study age), then
what to do (compress with a codec under the floors, or keep lossless). The first rule that matches decides.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from pydicom.dataset import Dataset

from pacs_cae.config import CodecSettings, CompressionRule, CompressionSettings, Settings
from pacs_cae.dicom.policy import check_eligibility
from pacs_cae.store import jobs
from pacs_cae.store.record import InstanceRecord


def _allows(values: list[str], value: str | None, *, fold: bool = True) -> bool:
    if not values:
        return True
    if value is None:
        return False
    if fold:
        return value.strip().upper() in {v.strip().upper() for v in values}
    return value.strip() in {v.strip() for v in values}


def matches(rule: CompressionRule, record: InstanceRecord) -> bool:
    """Every condition of ``rule`` holds for ``record`` (study age is a due time, see :func:`due_at`)."""
    return (_allows(rule.modalities, record.modality)
            and _allows(rule.sop_classes, record.sop_class_uid, fold=False)
            and _allows(rule.body_parts, record.body_part_examined)
            and _allows(rule.calling_aets, record.calling_aet))


#: ``codec.model`` (or a rule's ``model``) values that mean "no learned codec: archive everything losslessly".
NO_MODEL = ("", "none", "lossless")

#: The job of a series no rule compresses (``codec.model = "none"``, a ``compress = false`` rule, pixels the
#: codec cannot take): its worker only re-codes the verbatim C-STORE copies in their smallest exact coding.
#: Not a valid rule name (config validation), so it never names a configured rule. Defined with the queue.
LOSSLESS_JOB = jobs.LOSSLESS_JOB


def select_rule(settings: Settings, record: InstanceRecord) -> CompressionRule | None:
    """The rule that compresses ``record``, or None (no rule matches, the first match says lossless or names
    no model, or compression is off)."""
    if not settings.compression.enabled or record.storage != "lossless":
        return None
    for rule in settings.compression.effective_rules(settings.codec):
        if matches(rule, record):
            model = (rule.model or settings.codec.model).strip().lower()
            return rule if rule.compress and model not in NO_MODEL else None
    return None


def recodes_lossless(settings: Settings) -> bool:
    """Whether an instance no rule compresses still gets a job, which re-codes its verbatim copy exactly.

    Why: so C-STORE never waits for a codec, lossless archive or not (issue 12); off with compression
    itself, or when ``codec.lossless_methods`` is empty (nothing to re-code with: C-STORE encodes at once).
    """
    return settings.compression.enabled and bool(settings.codec.lossless_methods)


def eligible(ds: Dataset, codec: CodecSettings) -> tuple[bool, str]:
    """Can the codec take these pixels at all (size, photometric, bits: :mod:`pacs_cae.dicom.policy`)?

    The modality was already decided by the rule, so the policy's modality list is the instance's own.
    """
    view = dataclasses.replace(codec, modalities=[str(ds.get("Modality", "") or "")])
    # CodecSettings satisfies the policy's protocol; mypy only objects to list vs Sequence on a mutable field
    return check_eligibility(ds, view)


def find_rule(compression: CompressionSettings, settings: Settings, name: str) -> CompressionRule | None:
    """The configured rule called ``name`` (a job keeps its rule's name), None if it was removed since."""
    for rule in compression.effective_rules(settings.codec):
        if rule.name == name:
            return rule
    return None


def _study_day(study_date: str | None) -> datetime | None:
    try:
        return datetime.strptime((study_date or "")[:8], "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def due_at(rule: CompressionRule | None, compression: CompressionSettings, study_date: str | None,
           now: datetime) -> datetime:
    """When the job may run: ``delay_s`` after now, and not before the study is ``after_days`` old (``rule``
    None: a :data:`LOSSLESS_JOB`, due after the delay)."""
    due = now + timedelta(seconds=compression.delay_s)
    if rule is not None and rule.after_days > 0:
        start = _study_day(study_date) or now
        due = max(due, start + timedelta(days=rule.after_days))
    return due


__all__ = ["LOSSLESS_JOB", "NO_MODEL", "due_at", "eligible", "find_rule", "matches", "recodes_lossless",
           "select_rule"]
