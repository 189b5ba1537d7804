"""``max_abs_error`` through the real path (issue 11): δ = 2 guaranteed, δ = 0 exact and served as the original.

`pacs-cae serve` with the shipped ``mshp-v1`` model (which supports an error bound) and two compression rules
chosen by the sending AE: ``EXACTSCU`` -> ``max_abs_error = 0`` (the learned lossless tier), everyone else ->
``codec.max_abs_error = 2`` (given as ``--max-abs-error 2`` to `serve` and `worker`). DCMTK storescu sends a real MR slice (pydicom's ``MR_small.dcm``, evaluation
only) and small noisy synthetic slices under each rule, `pacs-cae worker --drain` compresses, getscu
retrieves, findscu asks for the lossy attributes:

* δ = 2: every retrieved pixel within 2 of the original, a new (derived) SOP Instance UID, DERIVED, Lossy Image
  Compression 01, and "max abs error <= 2" in Derivation Description; C-FIND says 01;
* δ = 0: the original UIDs and every element equal, Pixel Data byte for byte; C-FIND says nothing lossy.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import (
    clean_environment,
    drain,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)
from pacs_cae.train.mr_realism import realistic_slice
from tests.e2e.compare import unequal_attributes
from tests.e2e.scenario import write_datasets

pytestmark = pytest.mark.e2e

MODEL = "mshp-v1"
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DELTA = 2
TRAILING_PADDING = 0xFFFCFFFC
RULES = """
[[compression.rules]]
name = "exact"
calling_aets = ["EXACTSCU"]
max_abs_error = 0

[[compression.rules]]
name = "bounded"
modalities = ["MR"]
"""


def _real_mr(patient: str) -> pydicom.Dataset:
    """pydicom's real MR slice under fresh UIDs (so it can be sent once per rule)."""
    ds = pydicom.dcmread(str(get_testdata_file("MR_small.dcm")))
    ds.PatientID = patient
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def _synthetic(patient: str, seed: int) -> list[pydicom.Dataset]:
    series: list[pydicom.Dataset] = list(make_mr_series(2, 64, 64, 12, patient_id=patient,
                                                        patient_name="Bound^Phantom", seed=seed))
    rng = np.random.default_rng(seed)
    for ds in series:
        ds.PixelData = realistic_slice(ds.pixel_array.astype(np.float32), rng).astype(np.uint16).tobytes()
    return series


def _get(port: int, out: Path, study: str) -> dict[str, pydicom.Dataset]:
    out.mkdir()
    dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-S", "-od", str(out), *dcmtk.keys(
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}), "127.0.0.1", str(port)])
    return {str(ds.SOPInstanceUID): ds for ds in dcmtk.read_dir(out)}


def test_bound_two_is_kept_and_bound_zero_is_exact(module_database_url: str, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "bound.toml", data_dir=tmp_path / "data", port=port, database_url=module_database_url,
        # min_psnr_db 40: δ = 2 on a 12-bit slice is ~50-70 dB, and the 64x64 real slice spans ~2000 levels
        codec={"model": MODEL, "models_dir": str(MODELS_DIR), "device": "cpu", "min_psnr_db": 40.0},
        remotes={},
    )
    config.write_text(config.read_text() + RULES)
    if not module_database_url.startswith("sqlite"):
        import subprocess

        subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], check=True,
                       capture_output=True, env=clean_environment())
    bounded = [_real_mr("PCAE-D2"), *_synthetic("PCAE-D2S", 21)]
    exact = [_real_mr("PCAE-D0"), *_synthetic("PCAE-D0S", 22)]
    bound = ["--max-abs-error", str(DELTA)]  # codec.max_abs_error from the command line, serve and worker
    server = start_server(tmp_path, config, port, args=bound)
    try:
        for aet, datasets, folder in (("E2ESCU", bounded, "in2"), ("EXACTSCU", exact, "in0")):
            files = write_datasets(datasets, tmp_path / folder)
            dcmtk.run("storescu", ["-aec", "PACSCAE", "-aet", aet, "127.0.0.1", str(port), *map(str, files)])
        drained = drain(config, tmp_path, args=bound)
        assert drained.returncode == 0, drained.stdout + drained.stderr
        got: dict[str, pydicom.Dataset] = {}
        for i, study in enumerate(sorted({str(ds.StudyInstanceUID) for ds in bounded + exact})):
            got.update(_get(port, tmp_path / f"get{i}", study))
        found = {}  # C-FIND answers by the SOP Instance UID they name (the one C-GET delivers)
        series = sorted({(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)) for ds in bounded + exact})
        for i, (study, series_uid) in enumerate(series):
            for answer in dcmtk.find(port, "S", {
                    "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study, "SeriesInstanceUID": series_uid,
                    "SOPInstanceUID": "", "LossyImageCompression": "", "ImageType": ""}, tmp_path / f"find{i}"):
                found[str(answer.SOPInstanceUID)] = answer
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.log()

    assert len(got) == len(bounded) + len(exact)
    for original in bounded:
        uid = str(original.SOPInstanceUID)
        derived = str(derive_lossy_uid(uid, MODEL))
        served = got[derived]  # a lossy copy: a new UID, pointing back at the original
        assert served.SourceImageSequence[-1].ReferencedSOPInstanceUID == uid
        error = np.abs(served.pixel_array.astype(np.int64) - original.pixel_array.astype(np.int64))
        assert error.max() <= DELTA, f"{uid}: a pixel is off by {error.max()} > {DELTA}"
        assert served.LossyImageCompression == "01" and served.ImageType[0] == "DERIVED"
        assert f"max abs error <= {DELTA}" in served.DerivationDescription
        assert found[derived].LossyImageCompression == "01" and uid not in found
    for original in exact:
        uid = str(original.SOPInstanceUID)
        served = got[uid]  # the original UID, nothing derived
        # every element equal (Data Set Trailing Padding aside: storescu does not send it)
        assert not unequal_attributes(original, served, skip=(TRAILING_PADDING,))
        assert served.PixelData == original.PixelData
        assert "SourceImageSequence" not in served or len(served.SourceImageSequence) == len(
            original.get("SourceImageSequence", []))
        answer = found[uid]
        assert not answer.get("LossyImageCompression")
        assert list(answer.ImageType) == list(original.ImageType)
