"""The rate-distortion model through the real path, at two quality settings.

`pacs-cae serve` with ``model = "mshp-v1"`` stores one series at ``codec.quality = 1`` (the config file), is
restarted with ``--quality 4`` (the flag, given to `serve` and to the compression worker, which
makes the lossy copies after C-STORE) on the same database and stores a second series; DCMTK storescu
sends, getscu retrieves. For every instance the retrieved pixels are what the codec promises: the same PSNR
as encoding and decoding the slice with ``load_codec("mshp-v1")`` at that quality (to one stored level per
pixel, see ``tests/codec/test_rd_codec.py``), and the stored bytes (`pacs-cae stats --json`) are exactly those
blobs' bytes. The higher quality must give more dB for more bytes.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pacs_cae.codec import load_codec
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
from tests.e2e.compare import check_lossy, psnr_db
from tests.e2e.scenario import write_datasets

pytestmark = pytest.mark.e2e

MODEL = "mshp-v1"
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
QUALITIES = (1, 4)  # the learned layer alone; with the near-lossless residual layer


def _noisy_series(seed: int, patient: str) -> list:
    """A 12-bit MR phantom series made scanner-like (Rician noise, bias field), 3 slices of 256x256."""
    series = make_mr_series(3, 256, 256, 12, patient_id=patient, patient_name="RD^Phantom", seed=seed)
    rng = np.random.default_rng(seed)
    for ds in series:
        noisy = realistic_slice(ds.pixel_array.astype(np.float32), rng).astype(np.uint16)
        ds.PixelData = noisy.tobytes()
    return series


def _stats(config: Path) -> dict:
    out = subprocess.run([*pacs_cae_command(), "stats", "--json", "--config", str(config)], check=True,
                         capture_output=True, text=True, env=clean_environment()).stdout
    return json.loads(out)


def _cae_pixel_bytes(stats: dict) -> int:
    return sum(g["stored_pixel_bytes"] for g in stats["by_storage"] if g["storage"] == "cae" and g["model"] == MODEL)


def test_two_qualities_store_and_retrieve_as_promised(module_database_url: str, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "rd.toml", data_dir=tmp_path / "data", port=port, database_url=module_database_url,
        # the gate stays on (floor 20 dB: this test checks that stored = promised, not the floor policy);
        # require_gain and the 24:1 ratio ceiling off so both qualities are stored through the model
        # whatever their size
        codec={"model": MODEL, "models_dir": str(MODELS_DIR), "device": "cpu", "quality": QUALITIES[0],
               "gate": True, "min_psnr_db": 20.0, "require_gain": False, "max_compression_ratio": "none"},
        remotes={},
    )
    if not module_database_url.startswith("sqlite"):
        subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], check=True,
                       capture_output=True, env=clean_environment())
    reference = load_codec(MODEL, device="cpu", models_dir=MODELS_DIR)  # the server's device and mode
    measured: dict[int, tuple[float, int]] = {}
    stored_before = 0
    for quality, seed in zip(QUALITIES, (11, 12)):
        series = _noisy_series(seed, f"PCAE-RD{quality}")
        files = write_datasets(series, tmp_path / f"in{quality}")
        args = [] if quality == QUALITIES[0] else ["--quality", str(quality)]
        server = start_server(tmp_path, config, port, args=args)
        try:
            dcmtk.run("storescu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "127.0.0.1", str(port), *map(str, files)])
            # C-STORE kept the series losslessly; the compression worker makes the lossy copies
            drained = drain(config, tmp_path, args=args)
            assert drained.returncode == 0, drained.stdout + drained.stderr
            out = tmp_path / f"get{quality}"
            out.mkdir()
            dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-S", "-od", str(out), *dcmtk.keys(
                {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": str(series[0].StudyInstanceUID),
                 "SeriesInstanceUID": str(series[0].SeriesInstanceUID)}), "127.0.0.1", str(port)])
            retrieved = {str(ds.SourceImageSequence[-1].ReferencedSOPInstanceUID): ds
                         for ds in dcmtk.read_dir(out)}
        finally:
            assert server.stop(signal.SIGTERM) == 0, server.log()
        assert set(retrieved) == {str(ds.SOPInstanceUID) for ds in series}
        promised_bytes, psnrs = 0, []
        # the worker encodes a series in one batch (float kernels depend on the batch size); so does this
        blobs = reference.encode([ds.pixel_array for ds in series], bits_stored=12, quality=quality)
        for original, blob in zip(series, blobs):
            got = retrieved[str(original.SOPInstanceUID)]
            value = check_lossy(original, got, model_id=MODEL, floor_db=20.0)
            promised = reference.decode([blob])[0]
            diff = np.abs(promised.astype(np.int64) - got.pixel_array.astype(np.int64))
            assert diff.max() <= 1, f"retrieved pixels differ from the codec's by up to {diff.max()}"
            assert abs(value - psnr_db(original.pixel_array, promised)) < 0.05
            promised_bytes += len(blob)
            psnrs.append(value)
        stored = _cae_pixel_bytes(_stats(config))
        assert stored - stored_before == promised_bytes
        stored_before = stored
        measured[quality] = (float(np.mean(psnrs)), promised_bytes)
    (low_db, low_bytes), (high_db, high_bytes) = measured[QUALITIES[0]], measured[QUALITIES[1]]
    assert high_db > low_db + 3 and high_bytes > low_bytes, measured
