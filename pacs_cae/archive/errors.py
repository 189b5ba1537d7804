"""Archive failures carrying the DIMSE status the network layer answers with.

The archive raises these; ``pacs_cae.net`` maps ``.status`` straight onto the C-STORE / C-GET / C-MOVE
response, so every use case decides its status in one place (PS3.4 Annex B.2.3 and C.4.2.1.5).
"""

from __future__ import annotations


class ArchiveError(Exception):
    """A failed archive operation; ``status`` is the DIMSE status code to answer with.

    Every class takes the message first and the status by keyword (default: the class's own status).
    """

    default_status: int = 0xC000

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        self.status = self.default_status if status is None else int(status)
        self.message = message
        super().__init__(f"0x{self.status:04X}: {message}" if message else f"0x{self.status:04X}")


class OutOfResources(ArchiveError):
    """Refused: out of resources (0xA700), e.g. the database or disk failed."""

    default_status = 0xA700


class DataSetMismatch(ArchiveError):
    """Error: data set does not match SOP Class (0xA900), or the Affected SOP Instance UID differs."""

    default_status = 0xA900


class CannotUnderstand(ArchiveError):
    """Error: cannot understand (0xC000-0xCFFF), e.g. a required attribute is missing or unparsable."""

    default_status = 0xC000

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        if status is not None and not 0xC000 <= status <= 0xCFFF:
            raise ValueError(f"CannotUnderstand status must be in 0xC000-0xCFFF, got 0x{status:04X}")
        super().__init__(message, status=status)


class NotAuthorized(ArchiveError):
    """Refused: not authorized (0x0124), e.g. a calling AE title not in the allow list."""

    default_status = 0x0124


class UnknownDestination(ArchiveError):
    """Refused: move destination unknown (0xA801) for C-MOVE."""

    default_status = 0xA801


__all__ = [
    "ArchiveError",
    "CannotUnderstand",
    "DataSetMismatch",
    "NotAuthorized",
    "OutOfResources",
    "UnknownDestination",
]
