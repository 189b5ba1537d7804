"""One real `pacs-cae serve` per database backend, loaded once per module with DCMTK's storescu.

Module scope keeps the whole e2e run short (one server start and one ingest per backend); the tests then
query and retrieve what that ingest stored. Every test takes ``scenario`` and may only read from it, except
the last one of test_archive_e2e.py, which stops the server with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from pydicom.dataset import Dataset

# The factories live in tests/archive; make the repository root importable however pytest was started.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.archive.factories import make_mr_series, make_odd_size, make_rgb, make_sr  # noqa: E402
from tests.e2e import dcmtk  # noqa: E402
from tests.e2e.server_process import ServerProcess, free_port, start_server, write_config  # noqa: E402

#: The MR series under test: few slices keep the run short; 512x512 12-bit is the paper's format.
MR_SLICES = 8
MOVE_AET = "STORESCP"
UNTRAINED_FLOOR_DB = 3.0

PG_ENV = "PACS_CAE_TEST_PG_URL"  # same switch as tests/conftest.py: empty = no PostgreSQL variants
BACKENDS = ["sqlite"] + (
    [pytest.param("postgresql", marks=pytest.mark.postgresql)] if os.environ.get(PG_ENV, "x") != "" else []
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = dcmtk.missing_tools()
    if missing:
        # Not a skip: the product promises DCMTK interoperability, so a machine without it cannot pass.
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(pytest.mark.xfail(reason=f"DCMTK missing: {missing}", run=False, strict=True))


def codec_under_test() -> tuple[str, float]:
    """The model the archive defaults to if it ships, else the untrained init weights.

    Returns (model id, gate floor in dB). The floor is what the server is configured with, so the test checks
    the promise end to end: every CAE slice served is at least that good. Untrained weights reach ~7 dB on
    the phantom, so they get a low floor that still lets the CAE path run; a trained model gets the default.
    """
    from pacs_cae.codec import default_models_dir
    from pacs_cae.config import CodecSettings

    defaults = CodecSettings()
    card = Path(default_models_dir()) / defaults.model / "card.json"
    if card.exists() and json.loads(card.read_text()).get("trained", True):
        return defaults.model, float(defaults.min_psnr_db or 0.0)
    return "cae-paper-init", UNTRAINED_FLOOR_DB


@pytest.fixture(scope="module", params=BACKENDS)
def e2e_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like tests/conftest.py's ``database_url`` but module-scoped: a SQLite file or a fresh PG schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'archive.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(request.getfixturevalue("pg_database_url"))
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@dataclass
class Scenario:
    """What was sent, where the server runs, and how storescu fared."""

    server: ServerProcess
    work: Path
    database_url: str
    model_id: str
    floor_db: float
    move_port: int
    mr: list[Dataset]  # patient A: 512x512 12-bit series (CAE)
    small_mr: list[Dataset]  # patient B: 64x64 series (CAE, another patient and study)
    odd: Dataset  # patient A, odd size (lossless)
    rgb: Dataset  # patient A, colour (lossless)
    sr: Dataset  # patient A, Basic Text SR (lossless, no pixels)
    store: subprocess.CompletedProcess[str]

    @property
    def study_a(self) -> str:
        return str(self.mr[0].StudyInstanceUID)

    @property
    def lossless(self) -> list[Dataset]:
        return [self.odd, self.rgb, self.sr]

    @property
    def study_a_objects(self) -> list[Dataset]:
        return [*self.mr, *self.lossless]

    def originals(self) -> dict[str, Dataset]:
        return {str(ds.SOPInstanceUID): ds for ds in [*self.study_a_objects, *self.small_mr]}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run another `pacs-cae` command against the same configuration."""
        from tests.e2e.server_process import clean_environment, pacs_cae_command

        return subprocess.run([*pacs_cae_command(), *args, "--config", str(self.server.config)],
                              cwd=self.work, capture_output=True, text=True, timeout=180,
                              env=clean_environment())


def _write(datasets: list[Dataset], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def scenario(e2e_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Start `pacs-cae serve`, C-STORE the test objects with storescu, hand over; SIGTERM at the end."""
    work = tmp_path_factory.mktemp("e2e")
    model_id, floor = codec_under_test()
    port, move_port = free_port(), free_port()
    config = write_config(
        work / "pacs-cae.toml", data_dir=work / "data", port=port, database_url=e2e_database_url,
        codec={"model": model_id, "device": "cpu", "min_psnr_db": floor}, remotes={MOVE_AET: move_port},
    )
    mr = make_mr_series(MR_SLICES, 512, 512, 12, patient_id="PCAE-A", patient_name="Alpha^Phantom")
    shared = {"patient_id": "PCAE-A", "patient_name": "Alpha^Phantom", "study_uid": str(mr[0].StudyInstanceUID)}
    odd = make_odd_size(**{k: v for k, v in shared.items()}, series_number=2)
    rgb, sr = make_rgb(**shared), make_sr(**shared)
    small = make_mr_series(2, 64, 64, 12, patient_id="PCAE-B", patient_name="Beta^Phantom", study_date="20230102",
                           accession="ACCB", seed=1)
    files = _write([*mr, odd, rgb, sr, *small], work / "in")

    server = start_server(work, config, port)
    try:
        store = dcmtk.run("storescu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "127.0.0.1", str(port),
                                       *map(str, files)], check=False, timeout=300)
        yield Scenario(server, work, e2e_database_url, model_id, floor, move_port, mr, small, odd, rgb, sr, store)
    finally:
        if server.alive():
            server.stop(signal.SIGTERM)
