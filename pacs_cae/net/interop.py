"""Wire-level accommodations for widely deployed peers that pynetdicom's defaults trip up.

DCMTK's ``getscu`` (3.6.7, ``DcmSCU::handleCGETSession``) never reads the identifier of a C-GET response: it
takes the status from the command set and goes on to release the association, finds the identifier's
P-DATA-TF PDU instead of the A-RELEASE-RP and aborts ("Association Release Failed: DUL P-Data PDU arrived").
pynetdicom attaches an identifier to every failed C-GET/C-MOVE response, even when its Failed SOP Instance
UID List is empty, i.e. when the identifier itself was refused (0xA900, 0xC000) and no sub-operation ran.
The identifier is optional at the DIMSE level (PS3.7 9.1.3, "U"), so such an empty one is dropped here; a
list naming instances that failed is always sent (getscu then still stumbles, which is DCMTK's to fix).
"""

from __future__ import annotations

import io
import logging
from typing import Any

from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode

from pacs_cae.net.wire import BatchedDimse

LOG = logging.getLogger(__name__)

_NOT_FINAL = (0xFF00, 0xFF01)


class PeerFriendlyDimse(BatchedDimse):
    """pynetdicom's DIMSE provider, minus empty identifiers on final C-GET/C-MOVE failure responses."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if isinstance(primitive, (C_GET, C_MOVE)) and self._empty_failure_identifier(primitive, context_id):
            primitive.Identifier = None
        super().send_msg(primitive, context_id)

    def _empty_failure_identifier(self, primitive: C_GET | C_MOVE, context_id: int) -> bool:
        status = primitive.Status
        if primitive.MessageIDBeingRespondedTo is None or status in (None, 0x0000, *_NOT_FINAL):
            return False
        stream = primitive.Identifier
        if not isinstance(stream, io.BytesIO) or primitive.NumberOfCompletedSuboperations:
            return False
        try:
            syntax = self.assoc._accepted_cx[context_id].transfer_syntax[0]
            identifier = decode(io.BytesIO(stream.getvalue()), syntax.is_implicit_VR, syntax.is_little_endian,
                                syntax.is_deflated)
        except Exception:  # noqa: BLE001 - not ours to judge: send what pynetdicom built
            return False
        return list(identifier.keys()) == [0x00080058] and not identifier.FailedSOPInstanceUIDList


__all__ = ["PeerFriendlyDimse"]
