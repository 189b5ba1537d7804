"""Soak: parallel associations store while the server is killed (SIGKILL) and restarted at random moments.

Every instance the server acknowledged with 0x0000 must be in the archive and decode (``pacs-cae verify``)
afterwards; instances whose C-STORE was cut off may or may not be there, never half. Opt-in and bounded:

    .venv/bin/python -m pytest -q -p no:cacheprovider --soak tests/e2e/test_soak_e2e.py

``PACS_CAE_SOAK_SECONDS`` (default 120) sets how long the load runs per database backend.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage
from sqlalchemy import create_engine, text

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import (
    AE_TITLE,
    ServerProcess,
    clean_environment,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)

pytestmark = pytest.mark.soak
WORKERS = 6
BATCH = 10


class Load:
    """Worker threads storing fresh instances; each remembers what was acknowledged."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.acknowledged: set[str] = set()
        self.refused: dict[int, int] = {}
        self.lock = threading.Lock()

    def worker(self, index: int) -> None:
        rng = random.Random(index)
        ae = AE(ae_title=f"SOAK{index}")
        ae.add_requested_context(MRImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        n = 0
        while not self.stop.is_set():
            batch = make_mr_series(BATCH, 64, 64, 12, patient_id=f"SOAK{index}", seed=rng.randrange(1000))
            n += 1
            assoc = ae.associate("127.0.0.1", self.port, ae_title=AE_TITLE)
            if not assoc.is_established:
                time.sleep(0.2)  # the server is down or restarting
                continue
            try:
                for ds in batch:
                    if self.stop.is_set():
                        break
                    status = assoc.send_c_store(ds)
                    code = int(status.Status) if "Status" in status else -1
                    with self.lock:
                        if code == 0x0000:
                            self.acknowledged.add(str(ds.SOPInstanceUID))
                        else:
                            self.refused[code] = self.refused.get(code, 0) + 1
                    if not assoc.is_established:
                        break
            finally:
                if assoc.is_established:
                    assoc.release()


def test_acknowledged_instances_survive_random_kills(database_url: str, tmp_path: Path) -> None:
    seconds = float(os.environ.get("PACS_CAE_SOAK_SECONDS", "120"))
    port = free_port()
    config = write_config(tmp_path / "pacs-cae.toml", data_dir=tmp_path / "data", port=port,
                          database_url=database_url, codec={"model": "none"}, remotes={})
    env = clean_environment()
    if not database_url.startswith("sqlite"):
        subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], cwd=tmp_path,
                       check=True, capture_output=True, env=env)
    server: ServerProcess = start_server(tmp_path, config, port)
    load = Load(port)
    threads = [threading.Thread(target=load.worker, args=(i,), daemon=True) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    kills, rng, deadline = 0, random.Random(7), time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(2.0, 8.0))
            server.stop(signal.SIGKILL)
            kills += 1
            server = start_server(tmp_path, config, port)
        time.sleep(2.0)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(60)
    try:
        engine = create_engine(database_url)
        with engine.connect() as conn:
            stored = {row[0] for row in conn.execute(text("SELECT sop_instance_uid FROM instance"))}
        engine.dispose()
    finally:
        server.stop()
    verify = subprocess.run([*pacs_cae_command(), "verify", "--json", "--config", str(config)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, env=env, check=False)
    report = json.loads(verify.stdout)
    lost = load.acknowledged - stored
    print(f"\nsoak {seconds:.0f} s, {kills} kills: {len(load.acknowledged)} acknowledged, {len(stored)} stored, "
          f"{len(lost)} lost, refused {load.refused}, verify failed {report['failed']}")
    assert kills >= 1 and len(load.acknowledged) > 0
    assert not lost, f"{len(lost)} acknowledged instances are not in the archive"
    assert verify.returncode == 0 and report["failed"] == 0, report["failures"][:5]
