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

import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
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

from pacs_cae.dicom.transcode import LOSSLESS_ENCODINGS, LOSSY_METHODS
from tests.e2e import dcmtk
from tests.e2e.compare import psnr_db
from tests.e2e.scenario import codec_under_test
from tests.e2e.server_process import ServerProcess, free_port, start_server, write_config
from tests.e2e.syntax_corpus import CorpusFile, build, decoded

pytestmark = pytest.mark.e2e

UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
#: getscu's "prefer" option for each received syntax (incoming storage contexts).
GETSCU_PREFER = {
    ExplicitVRLittleEndian: "+xe", ImplicitVRLittleEndian: "+x=", DeflatedExplicitVRLittleEndian: "+xd",
    RLELossless: "+xr", JPEGBaseline8Bit: "+xy", JPEGExtended12Bit: "+xx", JPEGLosslessSV1: "+xs",
    JPEGLSLossless: "+xt", JPEGLSNearLossless: "+xu", JPEG2000Lossless: "+xv", JPEG2000: "+xw",
}
#: What the archive accepts first when a C-GET SCU lists it first (it can make it from any instance).
#: storescu's "propose" option for each syntax (that syntax, in its own context, with -R).
STORESCU_PROPOSE = {
    ExplicitVRLittleEndian: "-xe", ImplicitVRLittleEndian: "-xi", ExplicitVRBigEndian: "-xb",
    DeflatedExplicitVRLittleEndian: "-xd", RLELossless: "-xr", JPEGBaseline8Bit: "-xy", JPEGExtended12Bit: "-xx",
    JPEGLosslessSV1: "-xs", JPEGLSLossless: "-xt", JPEGLSNearLossless: "-xu", JPEG2000Lossless: "-xv",
    JPEG2000: "-xw",
}
PREFERENCE_HONOURED = {DeflatedExplicitVRLittleEndian, *LOSSLESS_ENCODINGS}
PLAIN_AET, ALL_AET = "PLAINSCP", "ALLSCP"


@dataclass
class Stored:
    server: ServerProcess
    work: Path
    corpus: list[CorpusFile]
    served: dict[str, str]  # original SOP Instance UID -> the UID C-FIND answers (derived for CAE copies)
    lossy_copy: dict[str, bool]  # original UID -> C-FIND says it is a CAE copy
    ports: dict[str, int]
    model_id: str
    floor_db: float

    @property
    def study(self) -> str:
        return str(self.corpus[0].dataset.StudyInstanceUID)

    def by_syntax(self) -> dict[UID, list[CorpusFile]]:
        out: dict[UID, list[CorpusFile]] = {}
        for f in self.corpus:
            out.setdefault(f.syntax, []).append(f)
        return out


def _find_image_level(port: int, study: str, out: Path) -> list[Dataset]:
    """Study Root IMAGE level without SeriesInstanceUID (what Orthanc sends), asking for the lossy keys."""
    return dcmtk.find(port, "S", {
        "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study, "SOPInstanceUID": "", "ImageType": "",
        "LossyImageCompression": "", "LossyImageCompressionRatio": "", "LossyImageCompressionMethod": "",
    }, out)


@pytest.fixture(scope="module", params=[pytest.param(False, id="representative"),
                                        pytest.param(True, id="full", marks=pytest.mark.syntax_sweep)])
def stored(request: pytest.FixtureRequest, module_database_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    if dcmtk.missing_tools():
        pytest.fail(f"DCMTK tools not found: {dcmtk.missing_tools()}", pytrace=False)
    work = tmp_path_factory.mktemp("syntaxes")
    corpus = build(work / "in", full=request.param)
    model_id, floor = codec_under_test()
    port = free_port()
    ports = {PLAIN_AET: free_port(), ALL_AET: free_port()}
    config = write_config(work / "pacs-cae.toml", data_dir=work / "data", port=port,
                          database_url=module_database_url,
                          codec={"model": model_id, "device": "cpu", "min_psnr_db": floor}, remotes=ports)
    if not module_database_url.startswith("sqlite"):
        from tests.e2e.server_process import clean_environment, pacs_cae_command

        subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], cwd=work, check=True,
                       capture_output=True, timeout=180, env=clean_environment())
    server = start_server(work, config, port)
    try:
        # -R with the file's own syntax proposed: each file travels, and is stored, in its own syntax
        groups: dict[UID, list[CorpusFile]] = {}
        for f in corpus:
            groups.setdefault(f.syntax, []).append(f)
        for syntax, files in groups.items():
            store = dcmtk.run("storescu", ["-v", "-R", STORESCU_PROPOSE[syntax], "-aec", "PACSCAE", "-aet", "E2ESCU",
                                           "127.0.0.1", str(port), *(str(f.path) for f in files)],
                              check=False, timeout=600)
            output = store.stdout + store.stderr
            assert store.returncode == 0, output + server.log()
            converted = [m for m in re.findall(r"Converting transfer syntax: (.+) -> (.+)", output) if m[0] != m[1]]
            assert not converted, f"storescu converted {syntax.name}: {converted}"
        answers = _find_image_level(port, corpus[0].dataset.StudyInstanceUID, work / "find")
        by_uid = {str(a.SOPInstanceUID): a for a in answers}
        assert len(answers) == len(corpus), f"C-FIND found {len(answers)} of {len(corpus)}"
        served, lossy = {}, {}
        from pacs_cae.dicom.uids import derive_lossy_uid

        for f in corpus:
            derived = str(derive_lossy_uid(f.uid, model_id))
            served[f.uid] = derived if derived in by_uid else f.uid
            answer = by_uid[served[f.uid]]
            lossy[f.uid] = "PACS_CAE" in _values(answer.get("LossyImageCompressionMethod"))
            assert lossy[f.uid] == (served[f.uid] != f.uid), f"{f.name}: derived UID and lossy method disagree"
            _check_find_answer(f, answer)
        yield Stored(server, work, corpus, served, lossy, ports, model_id, floor)
    finally:
        server.stop(signal.SIGTERM)


def _values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    return [str(value)] if isinstance(value, (str, float, int)) else [str(v) for v in value]  # type: ignore[union-attr]


def _check_find_answer(f: CorpusFile, answer: Dataset) -> None:
    """C-FIND says what C-GET delivers: lossy declared for lossy inputs and CAE copies; counts aligned."""
    n_ratios = len(_values(answer.get("LossyImageCompressionRatio")))
    n_methods = len(_values(answer.get("LossyImageCompressionMethod")))
    assert n_ratios == n_methods, f"{f.name}: {n_ratios} ratios vs {n_methods} methods"
    if f.syntax in LOSSY_METHODS or "PACS_CAE" in _values(answer.get("LossyImageCompressionMethod")):
        assert answer.LossyImageCompression == "01", f"{f.name}: lossy input not declared in C-FIND"


def _check(s: Stored, f: CorpusFile, got: Dataset, expected_syntax: set[UID] | UID, way: str) -> None:
    """One retrieved instance against the file sent: syntax, UID, pixels (or declared loss)."""
    syntax = UID(got.file_meta.TransferSyntaxUID)
    allowed = expected_syntax if isinstance(expected_syntax, set) else {expected_syntax}
    assert syntax in allowed, f"{way}: {f.name} came back as {syntax.name}, expected {sorted(a.name for a in allowed)}"
    assert str(got.SOPClassUID) == str(f.dataset.SOPClassUID)
    if f.pixels is None:
        assert "PixelData" not in got
        assert got.get("ContentSequence") == f.dataset.get("ContentSequence"), f"{way}: {f.name} content changed"
        return
    pixels = decoded(got)
    if s.lossy_copy[f.uid]:
        assert got.LossyImageCompression == "01" and got.ImageType[0] == "DERIVED", f"{way}: {f.name}"
        assert len(_values(got.LossyImageCompressionRatio)) == len(_values(got.LossyImageCompressionMethod))
        assert pixels.shape == f.pixels.shape and psnr_db(f.pixels, pixels) >= s.floor_db, f"{way}: {f.name}"
        return
    assert np.array_equal(pixels, f.pixels), f"{way}: {f.name} ({f.syntax.name} -> {syntax.name}) pixels differ"
    if f.syntax in LOSSY_METHODS and syntax not in LOSSY_METHODS:  # decoded: the syntax no longer says it
        assert got.get("LossyImageCompression") == "01", f"{way}: {f.name} lossy input not declared lossy"


def _match(s: Stored, received: list[Dataset], files: list[CorpusFile], way: str) -> dict[str, Dataset]:
    by_uid = {str(ds.SOPInstanceUID): ds for ds in received}
    expected = {s.served[f.uid] for f in files}
    assert set(by_uid) == expected and len(received) == len(files), (
        f"{way}: got {len(received)} instances, missing {sorted(expected - set(by_uid))}")
    return {f.uid: by_uid[s.served[f.uid]] for f in files}


def _getscu(s: Stored, out: Path, level_keys: dict[str, str], *options: str) -> list[Dataset]:
    out.mkdir(parents=True)
    dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-S", *options, "-od", str(out),
                         *dcmtk.keys(level_keys), "127.0.0.1", str(s.server.port)], timeout=300)
    return dcmtk.read_dir(out)


def test_getscu_default_gets_everything_uncompressed(stored: Stored) -> None:
    s = stored
    got = _match(s, _getscu(s, s.work / "get-default", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": s.study}),
                 s.corpus, "getscu default")
    for f in s.corpus:
        _check(s, f, got[f.uid], UNCOMPRESSED, "getscu default")


def test_getscu_preferring_the_received_syntax(stored: Stored) -> None:
    s = stored
    for syntax, files in s.by_syntax().items():
        option = GETSCU_PREFER.get(files[0].stored_syntax, "+x=")
        series = str(files[0].dataset.SeriesInstanceUID)
        received = _getscu(s, s.work / f"get-prefer-{syntax}", {
            "QueryRetrieveLevel": "SERIES", "StudyInstanceUID": s.study, "SeriesInstanceUID": series}, option)
        got = _match(s, received, files, f"getscu {option}")
        for f in files:
            own = f.stored_syntax
            expected: UID | set[UID] = own if own in PREFERENCE_HONOURED else UNCOMPRESSED
            if f.pixels is None:
                expected = UNCOMPRESSED  # getscu lists Explicit VR LE first
            _check(s, f, got[f.uid], expected, f"getscu {option}")


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
        got = _match(s, received, files, f"only {own.name}")
        for f in files:
            _check(s, f, got[f.uid], own, f"only {own.name}")


def test_instance_no_offered_syntax_can_carry_is_a_failed_suboperation(stored: Stored) -> None:
    """An uncompressed MR to a peer that offers only JPEG baseline: A702 with its UID in the failed list."""
    s = stored
    (f,) = [f for f in s.corpus if f.name == "MR_small.dcm"]
    status, identifier, received = _pynetdicom_get(s, {
        "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": s.study, "SeriesInstanceUID": str(f.dataset.SeriesInstanceUID),
        "SOPInstanceUID": f.uid}, [(str(f.dataset.SOPClassUID), JPEGBaseline8Bit)])
    assert received == []
    assert status == 0xA702, f"0x{status:04X}"
    assert identifier is not None and s.served[f.uid] in _values(identifier.FailedSOPInstanceUIDList)


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
        proc = dcmtk.run("movescu", ["-v", "-aec", "PACSCAE", "-aet", "E2ESCU", "-aem", aet, "-S",
                                     *dcmtk.keys({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": s.study}),
                                     "127.0.0.1", str(s.server.port)], check=False, timeout=600)
    finally:
        scp.send_signal(signal.SIGTERM)
        scp.wait(30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = _match(s, dcmtk.read_dir(out), s.corpus, f"movescu to {aet}")
    for f in s.corpus:
        # a CAE copy is proposed (and served) uncompressed; everything else as stored when accepted
        own = UNCOMPRESSED if s.lossy_copy[f.uid] else f.stored_syntax
        _check(s, f, got[f.uid], own if accept_all else UNCOMPRESSED, f"movescu to {aet}")
