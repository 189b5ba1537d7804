"""A pacs-cae archive holding the syntax corpus, as the interoperability tests share it.

:func:`open_archive` starts `pacs-cae serve`, stores the corpus with DCMTK ``storescu -R`` (each file in its
own transfer syntax), learns from a C-FIND at IMAGE level which instances the archive serves as CAE copies,
and hands over a :class:`Stored`; :func:`check` compares one retrieved instance with the file that was sent.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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

from pacs_cae.dicom.transcode import LOSSY_METHODS
from pacs_cae.testing import dcmtk
from pacs_cae.testing.server_process import (
    ServerProcess,
    clean_environment,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)
from tests.e2e.compare import psnr_db
from tests.e2e.scenario import codec_under_test
from tests.e2e.syntax_corpus import CorpusFile, decoded

#: storescu's "propose" option for each syntax (that syntax, in its own context, with -R).
STORESCU_PROPOSE = {
    ExplicitVRLittleEndian: "-xe", ImplicitVRLittleEndian: "-xi", ExplicitVRBigEndian: "-xb",
    DeflatedExplicitVRLittleEndian: "-xd", RLELossless: "-xr", JPEGBaseline8Bit: "-xy", JPEGExtended12Bit: "-xx",
    JPEGLosslessSV1: "-xs", JPEGLSLossless: "-xt", JPEGLSNearLossless: "-xu", JPEG2000Lossless: "-xv",
    JPEG2000: "-xw",
}

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


@contextmanager
def open_archive(work: Path, database_url: str, corpus: list[CorpusFile], remotes: dict[str, int]) -> Iterator[Stored]:
    """`pacs-cae serve` on ``database_url`` holding ``corpus``; stopped with SIGTERM afterwards."""
    if dcmtk.missing_tools():
        raise AssertionError(f"DCMTK tools not found: {dcmtk.missing_tools()}")
    model_id, floor = codec_under_test()
    port = free_port()
    config = write_config(work / "pacs-cae.toml", data_dir=work / "data", port=port, database_url=database_url,
                          codec={"model": model_id, "device": "cpu", "min_psnr_db": floor}, remotes=remotes)
    if not database_url.startswith("sqlite"):
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
            lossy[f.uid] = "PACS_CAE" in values(answer.get("LossyImageCompressionMethod"))
            assert lossy[f.uid] == (served[f.uid] != f.uid), f"{f.name}: derived UID and lossy method disagree"
            _check_find_answer(f, answer)
        yield Stored(server, work, corpus, served, lossy, remotes, model_id, floor)
    finally:
        server.stop(signal.SIGTERM)


def values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    return [str(value)] if isinstance(value, (str, float, int)) else [str(v) for v in value]  # type: ignore[union-attr]


def _check_find_answer(f: CorpusFile, answer: Dataset) -> None:
    """C-FIND says what C-GET delivers: lossy declared for lossy inputs and CAE copies; counts aligned."""
    n_ratios = len(values(answer.get("LossyImageCompressionRatio")))
    n_methods = len(values(answer.get("LossyImageCompressionMethod")))
    assert n_ratios == n_methods, f"{f.name}: {n_ratios} ratios vs {n_methods} methods"
    if f.syntax in LOSSY_METHODS or "PACS_CAE" in values(answer.get("LossyImageCompressionMethod")):
        assert answer.LossyImageCompression == "01", f"{f.name}: lossy input not declared in C-FIND"


def check(s: Stored, f: CorpusFile, got: Dataset, expected_syntax: set[UID] | UID, way: str) -> None:
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
        assert len(values(got.LossyImageCompressionRatio)) == len(values(got.LossyImageCompressionMethod))
        assert pixels.shape == f.pixels.shape and psnr_db(f.pixels, pixels) >= s.floor_db, f"{way}: {f.name}"
        return
    assert np.array_equal(pixels, f.pixels), f"{way}: {f.name} ({f.syntax.name} -> {syntax.name}) pixels differ"
    if f.syntax in LOSSY_METHODS and syntax not in LOSSY_METHODS:  # decoded: the syntax no longer says it
        assert got.get("LossyImageCompression") == "01", f"{way}: {f.name} lossy input not declared lossy"


def match(s: Stored, received: list[Dataset], files: list[CorpusFile], way: str) -> dict[str, Dataset]:
    by_uid = {str(ds.SOPInstanceUID): ds for ds in received}
    expected = {s.served[f.uid] for f in files}
    assert set(by_uid) == expected and len(received) == len(files), (
        f"{way}: got {len(received)} instances, missing {sorted(expected - set(by_uid))}")
    return {f.uid: by_uid[s.served[f.uid]] for f in files}


