"""The archive's small vocabularies as StrEnums, defined once for configuration, store, archive and network.

Members compare equal to their strings (``StorageKind.CAE == "cae"``), so database columns, TOML values and
JSON keep plain strings; code names the member instead of repeating the literal.
"""

from __future__ import annotations

from enum import StrEnum


class StorageKind(StrEnum):
    """How an instance's pixels are kept (``instance.storage``)."""

    CAE = "cae"  # a learned-codec blob (served as a declared lossy copy)
    LOSSLESS = "lossless"  # the received Pixel Data, byte-exact (codec/lossless.py)
    NONE = "none"  # no Pixel Data (SR, presentation states, ...)


class DuplicatePolicy(StrEnum):
    """What a re-sent SOP Instance UID with other content does (``server.duplicate_policy``)."""

    KEEP_FIRST = "keep-first"
    REPLACE = "replace"


class LossyUidPolicy(StrEnum):
    """The SOP Instance UID a lossy copy is served under (``codec.lossy_uid``)."""

    DERIVE = "derive"  # a new UID derived from the original and the model (PS3.3 C.7.6.1.1.5)
    KEEP = "keep"  # the received UID: not conformant, for sites whose workflow needs it


class QueryModel(StrEnum):
    """The C-FIND / C-GET / C-MOVE information model."""

    PATIENT_ROOT = "P"
    STUDY_ROOT = "S"


__all__ = ["DuplicatePolicy", "LossyUidPolicy", "QueryModel", "StorageKind"]
