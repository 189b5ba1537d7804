"""The DICOM network layer: the pynetdicom AE, its thin event handlers and the serve loop.

Nothing here knows SQL or the codec; every DIMSE service is a call into :class:`pacs_cae.archive.Archive`.
"""

from pacs_cae.net.ae import ACCEPTED_TRANSFER_SYNTAXES, build_ae, set_tcp_nodelay
from pacs_cae.net.handlers import ArchiveHandlers
from pacs_cae.net.server import ArchiveServer, serve_until_signalled

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "ArchiveHandlers",
    "ArchiveServer",
    "build_ae",
    "serve_until_signalled",
    "set_tcp_nodelay",
]
