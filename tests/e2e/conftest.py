"""One real `pacs-cae serve` per database backend, loaded once per module with DCMTK's storescu.

Module scope keeps the whole e2e run short (one server start and one ingest per backend); the tests then
query and retrieve what that ingest stored. Every test takes ``scenario`` and may only read from it, except
the last one of test_archive_e2e.py, which stops the server with SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The factories live in tests/archive; make the repository root importable however pytest was started.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series, make_odd_size, make_rgb, make_sr
from pacs_cae.testing.server_process import (
    clean_environment,
    drain,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)
from tests.e2e.scenario import MOVE_AET, MR_SLICES, Scenario, codec_under_test, write_datasets


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "syntax_sweep: every usable pydicom test file through the archive "
                            "(run with `pytest -m syntax_sweep tests/e2e`)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The full sweep runs only when asked for with ``-m syntax_sweep`` (deselected, not skipped, otherwise)."""
    if "syntax_sweep" in (config.option.markexpr or ""):
        return
    kept = [item for item in items if item.get_closest_marker("syntax_sweep") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture(scope="module")
def scenario(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Start `pacs-cae serve`, C-STORE the test objects with storescu, hand over; SIGTERM at the end."""
    missing = dcmtk.missing_tools()
    if missing:  # a failure, not a skip: DCMTK interoperability is what these tests prove
        pytest.fail(f"DCMTK tools not found: {missing} (install the `dcmtk` package)", pytrace=False)
    work = tmp_path_factory.mktemp("e2e")
    model_id, floor = codec_under_test()
    port, move_port = free_port(), free_port()
    config = write_config(
        work / "pacs-cae.toml", data_dir=work / "data", port=port, database_url=module_database_url,
        codec={"model": model_id, "device": "cpu", "min_psnr_db": floor, "max_compression_ratio": "none"}, remotes={MOVE_AET: move_port},
        compression={"delay_s": 0, "poll_s": 0.2},
    )
    mr = make_mr_series(MR_SLICES, 512, 512, 12, patient_id="PCAE-A", patient_name="Alpha^Phantom")
    shared = {"patient_id": "PCAE-A", "patient_name": "Alpha^Phantom", "study_uid": str(mr[0].StudyInstanceUID)}
    odd = make_odd_size(**shared, series_number=2)
    rgb, sr = make_rgb(**shared), make_sr(**shared)
    small = make_mr_series(2, 256, 256, 12, patient_id="PCAE-B", patient_name="Beta^Phantom", study_date="20230102",
                           accession="ACCB", seed=1)
    files = write_datasets([*mr, odd, rgb, sr, *small], work / "in")

    refused = None
    if not module_database_url.startswith("sqlite"):
        # A fresh PostgreSQL schema is out of date: serve must refuse it; `db upgrade` then sets it up.
        refused = subprocess.run([*pacs_cae_command(), "serve", "--config", str(config)], cwd=work,
                                 check=False, capture_output=True, text=True, timeout=90, env=clean_environment())
        upgrade = subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], cwd=work,
                                 check=False, capture_output=True, text=True, timeout=180, env=clean_environment())
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    server = start_server(work, config, port)
    try:
        store = dcmtk.run("storescu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "127.0.0.1", str(port),
                                       *map(str, files)], check=False, timeout=300)
        # C-STORE kept everything losslessly; the codec runs in workers (serve's thread on SQLite, and this)
        drained = drain(config, work)
        assert drained.returncode == 0, drained.stdout + drained.stderr
        yield Scenario(server, work, module_database_url, model_id, floor, move_port, mr, small, odd, rgb, sr, store,
                       refused)
    finally:
        if server.alive():
            server.stop(signal.SIGTERM)
