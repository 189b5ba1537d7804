"""Presentation contexts that copy cheaply: pynetdicom deep-copies the server's contexts for every association.

``RequestHandler._create_association`` gives each accepted association ``deepcopy(server.contexts)``, because
negotiation writes its results (context id, result, roles) into the copies. For the archive's 177 contexts and
2,247 transfer syntaxes that generic deepcopy rebuilds every UID through pydicom's validating constructor: about
22 ms of one core per association (timed ad hoc), most of the time an echo or a short C-FIND association costs. A UID is an
immutable ``str``, so a copy that shares the UIDs and copies only the mutable list is the same copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from pynetdicom.presentation import PresentationContext


class CheaplyCopiedContext(PresentationContext):
    """A PresentationContext whose deep copy shares its (immutable) UIDs: same fields, new transfer-syntax list."""

    def __deepcopy__(self, memo: dict[int, Any]) -> CheaplyCopiedContext:
        twin = copy.copy(self)
        twin._transfer_syntax = list(self._transfer_syntax)
        memo[id(self)] = twin
        return twin


def cheaply_copied(contexts: Iterable[PresentationContext]) -> list[PresentationContext]:
    """``contexts`` as :class:`CheaplyCopiedContext` copies (a server's ``contexts``, before it accepts)."""
    out: list[PresentationContext] = []
    for cx in contexts:
        twin = copy.deepcopy(cx)  # once per server start, the slow generic way
        twin.__class__ = CheaplyCopiedContext
        out.append(twin)
    return out


__all__ = ["CheaplyCopiedContext", "cheaply_copied"]
