"""A lossless archive (``codec.model = "none"``) through the real path: `pacs-cae serve`, storescu, the worker.

C-STORE writes the pixels as received (no codec on the association's path, issue 12); `pacs-cae worker
--drain` runs the series' lossless job, which re-codes them in their smallest exact coding; getscu then
returns every instance byte for byte, and `pacs-cae stats --json` shows less stored than received and no
fallback (lossless is what was asked for).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series, make_rgb
from pacs_cae.testing.server_process import (
    clean_environment,
    drain,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)
from tests.e2e.compare import check_lossless
from tests.e2e.scenario import write_datasets

pytestmark = pytest.mark.e2e


def _stats(config: Path) -> dict:
    return json.loads(subprocess.run([*pacs_cae_command(), "stats", "--json", "--config", str(config)],
                                     check=True, capture_output=True, text=True, env=clean_environment()).stdout)


def test_lossless_archive_stores_as_received_then_recodes_exactly(module_database_url: str,
                                                                  tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "lossless.toml", data_dir=tmp_path / "data", port=port,
                          database_url=module_database_url, codec={"model": "none"}, remotes={},
                          compression={"delay_s": 3600})  # serve's own worker waits: the drain below runs the jobs
    if not module_database_url.startswith("sqlite"):
        subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], check=True,
                       capture_output=True, env=clean_environment())
    series = make_mr_series(4, 128, 128)
    objects = [*series, make_rgb()]
    files = write_datasets(objects, tmp_path / "in")
    server = start_server(tmp_path, config, port)
    try:
        dcmtk.run("storescu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "127.0.0.1", str(port), *map(str, files)])
        before = _stats(config)
        assert before["instances"] == len(objects)
        assert before["stored_pixel_bytes"] > before["original_bytes"]  # as received, behind a CRC
        assert before["compression"]["pending"] == 2 and before["compression"]["failed"] == 0  # one per series

        drained = drain(config, tmp_path)
        assert drained.returncode == 0, drained.stdout + drained.stderr
        assert f"{len(objects)} re-coded losslessly" in drained.stdout, drained.stdout
        after = _stats(config)
        assert after["stored_pixel_bytes"] < after["original_bytes"]
        assert after["compression"]["done"] == 2 and after["compression"]["pending"] == 0
        assert after["fallbacks"]["total"] == 0 and after["compression"]["instances_compressed"] == 0
        assert {row["storage"] for row in after["by_storage"]} == {"lossless"}

        out = tmp_path / "get"
        out.mkdir()
        for study in {str(ds.StudyInstanceUID) for ds in objects}:
            dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-S", "-od", str(out), *dcmtk.keys(
                {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}), "127.0.0.1", str(port)])
        retrieved = {str(ds.SOPInstanceUID): ds for ds in dcmtk.read_dir(out)}
        assert set(retrieved) == {str(ds.SOPInstanceUID) for ds in objects}
        for original in objects:
            check_lossless(original, retrieved[str(original.SOPInstanceUID)])
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.log()
