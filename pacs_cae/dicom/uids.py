"""Deterministic SOP Instance UIDs for the lossy copies the archive serves.

PS3.3 C.7.6.1.1.5: an image that is a lossy-compressed version of a DICOM image "shall receive a new SOP
Instance UID". The archive never stores that copy, it rebuilds it on every retrieve, so the UID must be a
pure function of what was stored: the received SOP Instance UID and the model that made the pixel blob.
C-FIND at IMAGE level answers with the same value that C-GET/C-MOVE then deliver.

How: :func:`pydicom.uid.generate_uid` with a root and ``entropy_srcs`` hashes the sources with SHA-512 and
appends the integer to the root (64 characters at most). Note that ``generate_uid(prefix=None, ...)``
ignores ``entropy_srcs`` (it returns a random UUID-based ``2.25.`` UID), so a root is required; the default is
pydicom's documented root for generated UIDs. A site with its own registered root can pass it as ``root``
(at most 54 characters, ending with ``"."``). The sources are separated by a NUL so that
("1.2", "3x") and ("1.23", "x") cannot collide.
"""

from __future__ import annotations

from pydicom.uid import PYDICOM_ROOT_UID, UID, generate_uid

#: Versioned namespace of the derivation: changing the recipe must change this string.
LOSSY_UID_NAMESPACE = "pacs-cae/lossy-copy/v1"


def derive_lossy_uid(original_uid: str, model_id: str, root: str = PYDICOM_ROOT_UID) -> UID:
    """The SOP Instance UID of the CAE-reconstructed copy of ``original_uid`` made by ``model_id``."""
    if not original_uid:
        raise ValueError("original_uid must not be empty")
    sources = [LOSSY_UID_NAMESPACE, "\x00", str(original_uid).strip(), "\x00", model_id]
    return generate_uid(prefix=root, entropy_srcs=sources)


__all__ = ["LOSSY_UID_NAMESPACE", "derive_lossy_uid"]
