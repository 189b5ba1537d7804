"""Scale-out on one PostgreSQL (issue 12): two `pacs-cae serve` and two `pacs-cae worker` processes.

Four modalities store four series at once (two associations per server); a worker is SIGKILLed while it holds
a job (deterministically: the test holds the instance rows' locks until then) and restarted beside a second
worker; retrieves run while the backlog drains. Then: every instance is retrievable from either server (by the
original or the served UID), every series' job is done exactly once (the swap counter equals the number of
instances), and every stored blob is byte-identical to what one process (`import` + `worker --drain` on SQLite)
stores for the same files.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.store.schema import CompressionJob, Instance, InstanceBlob
from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import (
    ServerProcess,
    clean_environment,
    drain,
    free_port,
    pacs_cae_command,
    start_server,
    start_worker,
    wait_until,
    write_config,
)
from tests.e2e.scenario import UNTRAINED_FLOOR_DB, write_datasets

pytestmark = pytest.mark.e2e

SERIES, SLICES = 4, 6
MODEL = "cae-paper-init"  # deterministic and fast; the untrained floor keeps the lossy path on
CODEC = {"model": MODEL, "device": "cpu", "min_psnr_db": UNTRAINED_FLOOR_DB, "max_compression_ratio": "none"}
COMPRESSION = {"delay_s": 0, "poll_s": 0.2, "lease_s": 5, "series_per_claim": 1, "serve_workers": 0}


def _node_dir(base: Path, i: int) -> Path:
    """Each server's working directory (its own serve.log)."""
    path = base / f"node{i}"
    path.mkdir(exist_ok=True)
    return path


def _blob_hashes(engine: Engine) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Instance.sop_instance_uid, Instance.storage, InstanceBlob.pixel_blob)
                            .join(InstanceBlob, InstanceBlob.instance_pk == Instance.id)).all()
    return {uid: (storage, hashlib.sha256(blob).hexdigest()) for uid, storage, blob in rows}


def _get(port: int, keys: dict[str, str], out: Path) -> list:
    out.mkdir(parents=True)
    dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-S", "-od", str(out), *dcmtk.keys(keys),
                         "127.0.0.1", str(port)], timeout=300)
    return dcmtk.read_dir(out)


def test_two_servers_two_workers_on_one_postgresql(postgresql_url: str, tmp_path: Path) -> None:
    series = [make_mr_series(SLICES, 128, 128, 12, patient_id=f"PCAE-S{i}", patient_name=f"Scale^{i}", seed=20 + i)
              for i in range(SERIES)]
    files = [write_datasets(s, tmp_path / "in" / str(i)) for i, s in enumerate(series)]
    ports = [free_port(), free_port()]
    configs = [write_config(tmp_path / f"node{i}.toml", data_dir=tmp_path / f"data{i}", port=ports[i],
                            database_url=postgresql_url, codec=CODEC, remotes={}, compression=COMPRESSION)
               for i in range(2)]
    upgrade = subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(configs[0])], cwd=tmp_path,
                             check=False, capture_output=True, text=True, timeout=180, env=clean_environment())
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    engine = create_engine(postgresql_url)
    servers: list[ServerProcess] = []
    workers: list[subprocess.Popen[bytes]] = []
    try:
        servers = [start_server(_node_dir(tmp_path, i), configs[i], ports[i]) for i in range(2)]
        stores = [subprocess.Popen([dcmtk.tool("storescu"), "-aec", "PACSCAE", "-aet", f"MODALITY{i}", "127.0.0.1",
                                    str(ports[i % 2]), *map(str, f)], env=dcmtk.environment(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for i, f in enumerate(files)]
        outputs = [p.communicate(timeout=300)[0] for p in stores]
        assert [p.returncode for p in stores] == [0] * SERIES, outputs

        def held_by_worker0() -> list[int]:
            with engine.connect() as conn:
                return list(conn.scalars(select(CompressionJob.id).where(
                    CompressionJob.state == "running",
                    CompressionJob.lease_owner.like(f"%:{workers[0].pid}:%"))))

        # Kill worker 0 while it holds a job, deterministically: the test holds the instance rows' locks, so
        # the worker claims a job (its lease committed) and then waits at the swap, where it locks them.
        locker = engine.connect()
        locker.execute(select(Instance.id).with_for_update()).all()
        try:
            workers = [start_worker(configs[0], tmp_path, "worker0")]
            wait_until(lambda: bool(held_by_worker0()), 300, "worker 0 to hold a job")
            workers[0].send_signal(signal.SIGKILL)  # mid-run: its claimed job is reclaimed after the lease
            workers[0].wait(30)
            orphaned = held_by_worker0()
            assert orphaned
        finally:
            locker.rollback()
            locker.close()
        workers = [start_worker(configs[0], tmp_path, "worker0-restarted"),
                   start_worker(configs[1], tmp_path, "worker1")]

        # retrieve while the backlog drains: every study complete, from the server that did not store it
        for i, s in enumerate(series):
            got = _get(ports[(i + 1) % 2], {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": str(s[0].StudyInstanceUID)},
                       tmp_path / "during" / str(i))
            assert len(got) == SLICES

        def drained() -> bool:
            with engine.connect() as conn:
                states = conn.execute(select(CompressionJob.state)).scalars().all()
            return len(states) == SERIES and set(states) == {"done"}

        wait_until(drained, 600, "every compression job done")
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(60)
        for server in servers:
            server.stop(signal.SIGTERM)

    total = SERIES * SLICES
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Instance)) == total
        assert conn.scalar(select(func.count()).where(Instance.storage == "cae")) == total
        # no job lost or done twice: each instance was swapped exactly once
        assert conn.scalar(select(func.sum(CompressionJob.compressed_instances))) == total
        if orphaned:  # the killed worker's job was claimed again after its lease expired
            assert all(n >= 1 for n in conn.scalars(select(CompressionJob.attempts)
                                                    .where(CompressionJob.id.in_(orphaned))))
    assert [w.returncode for w in workers[1:]] == [0]

    # every instance retrievable, by the served or the original UID, once the servers are back
    servers = [start_server(_node_dir(tmp_path, i), configs[i], ports[i]) for i in range(2)]
    try:
        for i, s in enumerate(series):
            got = _get(ports[i % 2], {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": str(s[0].StudyInstanceUID)},
                       tmp_path / "after" / str(i))
            assert {str(ds.SOPInstanceUID) for ds in got} == {derive_lossy_uid(ds.SOPInstanceUID, MODEL) for ds in s}
            assert all(ds.LossyImageCompression == "01" for ds in got)
        first = series[0][0]
        for uid in (str(first.SOPInstanceUID), derive_lossy_uid(first.SOPInstanceUID, MODEL)):
            got = _get(ports[1], {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": str(first.StudyInstanceUID),
                                  "SeriesInstanceUID": str(first.SeriesInstanceUID), "SOPInstanceUID": uid},
                       tmp_path / "by-uid" / uid)
            assert [str(ds.SOPInstanceUID) for ds in got] == [derive_lossy_uid(first.SOPInstanceUID, MODEL)]
    finally:
        for server in servers:
            server.stop(signal.SIGTERM)

    # identical to one process: the same files imported and drained on SQLite
    reference = write_config(tmp_path / "one.toml", data_dir=tmp_path / "one", port=free_port(),
                             database_url=f"sqlite:///{tmp_path / 'one.db'}", codec=CODEC, remotes={},
                             compression=COMPRESSION)
    imported = subprocess.run([*pacs_cae_command(), "import", str(tmp_path / "in"), "--config", str(reference)],
                              check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env=clean_environment())
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert drain(reference, tmp_path).returncode == 0
    one = create_engine(f"sqlite:///{tmp_path / 'one.db'}")
    assert _blob_hashes(engine) == _blob_hashes(one)
    one.dispose()
    engine.dispose()
