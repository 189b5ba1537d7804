"""Issue 8's acceptance check: everything stored comes back, in any transfer syntax, to real peers.

pydicom's test files in every transfer syntax it ships (syntax_corpus.py) are stored with DCMTK
``storescu -R`` in their own syntax, then retrieved:

1. getscu with its default (uncompressed) proposals: every instance uncompressed;
2. getscu preferring the received syntax (``+xr``, ``+xt``, ...): in that syntax where the archive can
   produce it for any instance (RLE, JPEG-LS lossless, JPEG 2000 lossless, Deflated), otherwise decoded;
   and a pynetdicom C-GET SCU proposing *only* the received syntax: every instance in its stored syntax;
3. movescu to a default storescp (uncompressed only) and to ``storescp +xa`` (accepts everything): the
   C-MOVE sub-association proposes the stored syntax and the uncompressed ones.

Each way, every instance must come back once with the decoded pixels of the file that was sent (the same
decoding plugin on both sides), or, for a CAE copy, declared lossy. C-FIND at IMAGE level (Study Root,
no SeriesInstanceUID) says beforehand which instances are lossy copies. The default run stores a
representative set (~16 files, well under a minute); ``pytest -m syntax_sweep tests/e2e`` stores every
usable file (~140).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from pacs_cae.dicom.transcode import LOSSLESS_ENCODINGS
from pacs_cae.testing import dcmtk
from pacs_cae.testing.server_process import free_port
from tests.e2e.syntax_archive import Stored, check, match, open_archive, values
from tests.e2e.syntax_corpus import build

pytestmark = pytest.mark.e2e

UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
#: getscu's "prefer" option for each received syntax (incoming storage contexts).
GETSCU_PREFER = {
    ExplicitVRLittleEndian: "+xe", ImplicitVRLittleEndian: "+x=", DeflatedExplicitVRLittleEndian: "+xd",
    RLELossless: "+xr", JPEGBaseline8Bit: "+xy", JPEGExtended12Bit: "+xx", JPEGLosslessSV1: "+xs",
    JPEGLSLossless: "+xt", JPEGLSNearLossless: "+xu", JPEG2000Lossless: "+xv", JPEG2000: "+xw",
}
#: What the archive accepts first when a C-GET SCU lists it first (it can make it from any instance).
PREFERENCE_HONOURED = {DeflatedExplicitVRLittleEndian, *LOSSLESS_ENCODINGS}
PLAIN_AET, ALL_AET = "PLAINSCP", "ALLSCP"


@pytest.fixture(scope="module", params=[pytest.param(False, id="representative"),
                                        pytest.param(True, id="full", marks=pytest.mark.syntax_sweep)])
def stored(request: pytest.FixtureRequest, module_database_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    work = tmp_path_factory.mktemp("syntaxes")
    corpus = build(work / "in", full=request.param)
    with open_archive(work, module_database_url, corpus, {PLAIN_AET: free_port(), ALL_AET: free_port()}) as s:
        yield s


def _getscu(s: Stored, out: Path, level_keys: dict[str, str], *options: str) -> list[Dataset]:
    out.mkdir(parents=True)
    dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-S", *options, "-od", str(out),
                         *dcmtk.keys(level_keys), "127.0.0.1", str(s.server.port)], timeout=300)
    return dcmtk.read_dir(out)


def test_getscu_default_gets_everything_uncompressed(stored: Stored) -> None:
    s = stored
    got = match(s, _getscu(s, s.work / "get-default", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": s.study}),
                 s.corpus, "getscu default")
    for f in s.corpus:
        check(s, f, got[f.uid], UNCOMPRESSED, "getscu default")


def test_getscu_preferring_the_received_syntax(stored: Stored) -> None:
    s = stored
    for syntax, files in s.by_syntax().items():
        option = GETSCU_PREFER.get(files[0].stored_syntax, "+x=")
        series = str(files[0].dataset.SeriesInstanceUID)
        received = _getscu(s, s.work / f"get-prefer-{syntax}", {
            "QueryRetrieveLevel": "SERIES", "StudyInstanceUID": s.study, "SeriesInstanceUID": series}, option)
        got = match(s, received, files, f"getscu {option}")
        for f in files:
            own = f.stored_syntax
            expected: UID | set[UID] = own if own in PREFERENCE_HONOURED else UNCOMPRESSED
            if f.pixels is None:
                expected = UNCOMPRESSED  # getscu lists Explicit VR LE first
            check(s, f, got[f.uid], expected, f"getscu {option}")


def _pynetdicom_get(s: Stored, keys: dict[str, str], contexts: list[tuple[str, str]]) -> tuple[int, Dataset | None,
                                                                                                 list[Dataset]]:
    """A raw pynetdicom C-GET SCU proposing exactly ``contexts`` as storage SCP; (final status, identifier, received)."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    ae = AE(ae_title="E2ERAW")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
        roles.append(build_role(sop_class, scp_role=True))
    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    assoc = ae.associate("127.0.0.1", s.server.port, ae_title="PACSCAE", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    final: tuple[int, Dataset | None] = (-1, None)
    try:
        for status, ident in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            if status and status.Status != 0xFF00:
                final = (int(status.Status), ident)
    finally:
        assoc.release()
    return final[0], final[1], received


def test_peer_proposing_only_the_received_syntax_gets_it(stored: Stored) -> None:
    """Lossy and JPEG lossless syntaxes too: an instance goes out as stored, undecoded, when that is offered."""
    s = stored
    for syntax, files in s.by_syntax().items():
        own = files[0].stored_syntax
        classes = sorted({str(f.dataset.SOPClassUID) for f in files})
        status, _, received = _pynetdicom_get(s, {
            "QueryRetrieveLevel": "SERIES", "StudyInstanceUID": s.study,
            "SeriesInstanceUID": str(files[0].dataset.SeriesInstanceUID)}, [(c, own) for c in classes])
        assert status == 0x0000, f"{syntax.name}: C-GET final status 0x{status:04X}"
        got = match(s, received, files, f"only {own.name}")
        for f in files:
            check(s, f, got[f.uid], own, f"only {own.name}")


def test_instance_no_offered_syntax_can_carry_is_a_failed_suboperation(stored: Stored) -> None:
    """An uncompressed MR to a peer that offers only JPEG baseline: A702 with its UID in the failed list."""
    s = stored
    (f,) = [f for f in s.corpus if f.name == "MR_small.dcm"]
    status, identifier, received = _pynetdicom_get(s, {
        "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": s.study, "SeriesInstanceUID": str(f.dataset.SeriesInstanceUID),
        "SOPInstanceUID": f.uid}, [(str(f.dataset.SOPClassUID), JPEGBaseline8Bit)])
    assert received == []
    assert status == 0xA702, f"0x{status:04X}"
    assert identifier is not None and s.served[f.uid] in values(identifier.FailedSOPInstanceUIDList)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until the storescp accepts connections (else the C-MOVE would race its start-up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "storescp exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"storescp did not listen on {port}")


@pytest.mark.parametrize(("aet", "accept_all"), [(PLAIN_AET, False), (ALL_AET, True)])
def test_movescu_to_storescp(stored: Stored, aet: str, accept_all: bool) -> None:
    """Default storescp (uncompressed only): everything decoded. storescp +xa: everything as stored."""
    s = stored
    out = s.work / f"move-{aet}"
    out.mkdir()
    scp = subprocess.Popen([str(dcmtk.tool("storescp")), *(["+xa"] if accept_all else []), "-aet", aet, "-od",
                            str(out), str(s.ports[aet])], env=dcmtk.environment(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    try:
        _wait_listening(s.ports[aet], scp)
        proc = dcmtk.run("movescu", ["-v", "-aec", "PACSCAE", "-aet", "E2ESCU", "-aem", aet, "-S",
                                     *dcmtk.keys({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": s.study}),
                                     "127.0.0.1", str(s.server.port)], check=False, timeout=600)
    finally:
        scp.send_signal(signal.SIGTERM)
        scp.wait(30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = match(s, dcmtk.read_dir(out), s.corpus, f"movescu to {aet}")
    for f in s.corpus:
        # a CAE copy is proposed (and served) uncompressed; everything else as stored when accepted
        own = UNCOMPRESSED if s.lossy_copy[f.uid] else f.stored_syntax
        check(s, f, got[f.uid], own if accept_all else UNCOMPRESSED, f"movescu to {aet}")
