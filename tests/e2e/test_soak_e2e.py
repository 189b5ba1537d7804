"""Soak: parallel associations store while processes are killed (SIGKILL) and restarted at random moments.

1. Lossless archive, the server killed: every instance the server acknowledged with 0x0000 must be in the
   archive and decode (``pacs-cae verify``) afterwards; instances whose C-STORE was cut off may or may not be
   there, never half.
2. Learned codec with two ``pacs-cae worker`` processes (issue 12, "how we will check it"): the server and the
   workers are killed at random while series are stored, compressed and retrieved (C-GET, pynetdicom as the
   peer). Every C-GET that ended 0x0000 gave the whole study, all original or all lossy; afterwards every
   acknowledged instance is retrieved with DCMTK and compared with what was sent (originals byte-exact, lossy
   copies declared and above the floor), no job failed, none was lost or done twice.

Opt-in and bounded:

    .venv/bin/python -m pytest -q -p no:cacheprovider --soak tests/e2e/test_soak_e2e.py

``PACS_CAE_SOAK_SECONDS`` (default 120) sets how long the load runs per test and database backend.
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
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import MRImageStorage, StudyRootQueryRetrieveInformationModelGet
from sqlalchemy import create_engine, func, select, text

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.store.schema import CompressionJob, Instance
from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import (
    AE_TITLE,
    ServerProcess,
    clean_environment,
    free_port,
    pacs_cae_command,
    start_server,
    start_worker,
    wait_until,
    write_config,
)
from tests.e2e.compare import check_lossless, check_lossy
from tests.e2e.scenario import UNTRAINED_FLOOR_DB

pytestmark = pytest.mark.soak
WORKERS = 6
BATCH = 10


#: The learned-codec soak: deterministic, fast, and the untrained floor keeps the lossy path on.
MODEL = "cae-paper-init"
CODEC = {"model": MODEL, "device": "cpu", "min_psnr_db": UNTRAINED_FLOOR_DB, "max_compression_ratio": "none"}
COMPRESSION = {"delay_s": 0, "poll_s": 0.2, "lease_s": 3, "series_per_claim": 2, "serve_workers": 0}


def _verify(config: Path, workdir: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`pacs-cae verify --json` on the soaked archive: (the process, its report)."""
    verify = subprocess.run([*pacs_cae_command(), "verify", "--json", "--config", str(config)], cwd=workdir,
                            capture_output=True, text=True, timeout=600, env=clean_environment(), check=False)
    return verify, json.loads(verify.stdout)


class Load:
    """Worker threads storing fresh series (one per association); each remembers what was acknowledged."""

    def __init__(self, port: int, size: int = 64) -> None:
        self.port = port
        self.size = size
        self.stop = threading.Event()
        self.acknowledged: dict[str, Dataset] = {}
        self.complete: list[list[Dataset]] = []  # series whose every slice was acknowledged
        self.refused: dict[int, int] = {}
        self.lock = threading.Lock()

    def end(self, threads: list[threading.Thread]) -> None:
        """Stop storing and wait for ``threads`` (the load's and any other that watches ``stop``)."""
        self.stop.set()
        for thread in threads:
            thread.join(120)

    def worker(self, index: int) -> None:
        rng = random.Random(index)
        ae = AE(ae_title=f"SOAK{index}")
        ae.add_requested_context(MRImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        n = 0
        while not self.stop.is_set():
            batch = make_mr_series(BATCH, self.size, self.size, 12, patient_id=f"SOAK{index}",
                                   seed=rng.randrange(1000))
            n += 1
            assoc = ae.associate("127.0.0.1", self.port, ae_title=AE_TITLE)
            if not assoc.is_established:
                time.sleep(0.2)  # the server is down or restarting
                continue
            acknowledged = 0
            try:
                for ds in batch:
                    if self.stop.is_set():
                        break
                    status = assoc.send_c_store(ds)
                    code = int(status.Status) if "Status" in status else -1
                    with self.lock:
                        if code == 0x0000:
                            self.acknowledged[str(ds.SOPInstanceUID)] = ds
                            acknowledged += 1
                        else:
                            self.refused[code] = self.refused.get(code, 0) + 1
                    if not assoc.is_established:
                        break
                if acknowledged == len(batch):
                    with self.lock:
                        self.complete.append(batch)
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
        load.end(threads)
    try:
        engine = create_engine(database_url)
        with engine.connect() as conn:
            stored = {row[0] for row in conn.execute(text("SELECT sop_instance_uid FROM instance"))}
        engine.dispose()
    finally:
        server.stop()
    verify, report = _verify(config, tmp_path)
    lost = set(load.acknowledged) - stored
    print(f"\nsoak {seconds:.0f} s, {kills} kills: {len(load.acknowledged)} acknowledged, {len(stored)} stored, "
          f"{len(lost)} lost, refused {load.refused}, verify failed {report['failed']}")
    assert kills >= 1 and len(load.acknowledged) > 0
    assert not lost, f"{len(lost)} acknowledged instances are not in the archive"
    assert verify.returncode == 0 and report["failed"] == 0, report["failures"][:5]


def _retrieved_as_sent(sent: list[Dataset], received: list[Dataset]) -> str | None:
    """Why ``received`` (one C-GET's instances) is not ``sent`` all original or all lossy (None: it is)."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in received}
    if len(by_uid) != len(received):
        return f"{len(received) - len(by_uid)} instance(s) delivered twice"
    originals = {str(ds.SOPInstanceUID) for ds in sent}
    lossy = {derive_lossy_uid(uid, MODEL): uid for uid in originals}
    if set(by_uid) == originals:
        for ds in sent:
            check_lossless(ds, by_uid[str(ds.SOPInstanceUID)])
    elif set(by_uid) == set(lossy):
        for ds in sent:
            check_lossy(ds, by_uid[derive_lossy_uid(ds.SOPInstanceUID, MODEL)], model_id=MODEL,
                        floor_db=UNTRAINED_FLOOR_DB)
    else:
        return (f"{len(set(by_uid) & originals)} original, {len(set(by_uid) & set(lossy))} lossy, "
                f"{len(set(by_uid) - originals - set(lossy))} unknown of {len(sent)} sent")
    return None


class Retriever:
    """C-GETs of fully acknowledged series (pynetdicom as the peer) while the load and the kills go on."""

    def __init__(self, port: int, load: Load) -> None:
        self.port, self.load = port, load
        self.complete = self.cut = 0
        self.problems: list[str] = []

    def run(self) -> None:
        rng = random.Random(99)
        ae = AE(ae_title="SOAKGET")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(MRImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        while not self.load.stop.is_set():
            with self.load.lock:
                done = list(self.load.complete)
            if not done:
                time.sleep(0.2)
                continue
            # mostly the newest series: the one a worker is likely compressing now
            sent = done[-1] if rng.random() < 0.7 else rng.choice(done)
            received: list[Dataset] = []

            def on_store(event: evt.Event, received: list[Dataset] = received) -> int:
                received.append(event.dataset)
                return 0x0000

            assoc = ae.associate("127.0.0.1", self.port, ae_title=AE_TITLE,
                                 ext_neg=[build_role(MRImageStorage, scp_role=True)],
                                 evt_handlers=[(evt.EVT_C_STORE, on_store)])
            if not assoc.is_established:
                time.sleep(0.2)
                continue
            query = Dataset()
            query.QueryRetrieveLevel = "SERIES"
            query.StudyInstanceUID = sent[0].StudyInstanceUID
            query.SeriesInstanceUID = sent[0].SeriesInstanceUID
            final = -1
            try:
                for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                    final = int(status.Status) if "Status" in status else -1
            finally:
                if assoc.is_established:
                    assoc.release()
            if final != 0x0000:  # cut off by a kill: nothing to judge
                self.cut += 1
                continue
            try:
                problem = _retrieved_as_sent(sent, received)
            except AssertionError as exc:
                problem = str(exc)
            if problem:
                self.problems.append(f"series {sent[0].SeriesInstanceUID}: {problem}")
            self.complete += 1


def _jobs(database_url: str) -> tuple[dict[str, int], int, int]:
    """(jobs per state, instances stored lossy, instances the jobs say they swapped)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            states = dict(conn.execute(select(CompressionJob.state, func.count()).group_by(CompressionJob.state))
                          .tuples().all())
            lossy = conn.scalar(select(func.count()).where(Instance.storage == "cae")) or 0
            swapped = conn.scalar(select(func.coalesce(func.sum(CompressionJob.compressed_instances), 0))) or 0
    finally:
        engine.dispose()
    return states, int(lossy), int(swapped)


def test_compressed_archive_survives_random_kills_of_server_and_workers(database_url: str, tmp_path: Path) -> None:
    seconds = float(os.environ.get("PACS_CAE_SOAK_SECONDS", "120"))
    port = free_port()
    config = write_config(tmp_path / "pacs-cae.toml", data_dir=tmp_path / "data", port=port,
                          database_url=database_url, codec=CODEC, remotes={}, compression=COMPRESSION)
    env = clean_environment()
    if not database_url.startswith("sqlite"):
        subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], cwd=tmp_path,
                       check=True, capture_output=True, env=env)
    server: ServerProcess = start_server(tmp_path, config, port)
    workers = [start_worker(config, tmp_path, f"worker{i}") for i in range(2)]
    load = Load(port, size=128)
    retriever = Retriever(port, load)
    threads = [threading.Thread(target=load.worker, args=(i,), daemon=True) for i in range(WORKERS - 2)]
    threads.append(threading.Thread(target=retriever.run, daemon=True))
    for thread in threads:
        thread.start()
    kills: dict[str, int] = {}
    rng, deadline = random.Random(11), time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(1.5, 6.0))
            target = rng.choice(["server", "worker0", "worker1"])
            kills[target] = kills.get(target, 0) + 1
            if target == "server":
                server.stop(signal.SIGKILL)
                server = start_server(tmp_path, config, port)
            else:
                i = int(target[-1])
                workers[i].send_signal(signal.SIGKILL)
                workers[i].wait(30)
                workers[i] = start_worker(config, tmp_path, f"worker{i}")
        time.sleep(2.0)
    finally:
        load.end(threads)
    try:
        def drained() -> bool:
            states, _, _ = _jobs(database_url)
            return bool(states) and set(states) <= {"done", "failed"}

        wait_until(drained, 900, "the workers to finish every compression job")
        states, lossy, swapped = _jobs(database_url)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(60)
    try:
        mismatched = []
        for index in range(WORKERS - 2):
            out = tmp_path / "after" / str(index)
            out.mkdir(parents=True)
            dcmtk.run("getscu", ["-aec", AE_TITLE, "-aet", "E2ESCU", "-P", "-od", str(out),
                                 *dcmtk.keys({"QueryRetrieveLevel": "PATIENT", "PatientID": f"SOAK{index}"}),
                                 "127.0.0.1", str(port)], timeout=900)
            got = dcmtk.read_dir(out)
            for series_uid in {str(ds.SeriesInstanceUID) for ds in got}:
                sent = [ds for ds in load.acknowledged.values() if str(ds.SeriesInstanceUID) == series_uid]
                received = [ds for ds in got if str(ds.SeriesInstanceUID) == series_uid]
                served = {str(ds.SOPInstanceUID) for ds in sent} | {derive_lossy_uid(ds.SOPInstanceUID, MODEL)
                                                                    for ds in sent}
                # instances whose C-STORE was cut off after the commit are there too: judge what was acknowledged
                received = [ds for ds in received if str(ds.SOPInstanceUID) in served]
                problem = _retrieved_as_sent(sent, received)
                if problem:
                    mismatched.append(f"series {series_uid}: {problem}")
            retrieved = {str(ds.SOPInstanceUID) for ds in got}
            missing = [uid for uid, ds in load.acknowledged.items() if ds.PatientID == f"SOAK{index}"
                       and uid not in retrieved and derive_lossy_uid(uid, MODEL) not in retrieved]
            assert not missing, f"{len(missing)} acknowledged instances of SOAK{index} were not retrieved"
    finally:
        server.stop()
    verify, report = _verify(config, tmp_path)
    print(f"\nsoak {seconds:.0f} s, kills {kills}: {len(load.acknowledged)} acknowledged, {len(load.complete)} "
          f"complete series, C-GETs during the load {retriever.complete} complete / {retriever.cut} cut off, "
          f"jobs {states}, {lossy} lossy, refused {load.refused}, verify failed {report['failed']}")
    assert sum(kills.values()) >= 1 and load.complete and retriever.complete > 0
    assert not retriever.problems, retriever.problems[:5]
    assert not mismatched, mismatched[:5]
    assert states.get("failed", 0) == 0, states
    assert lossy > 0 and swapped == lossy, f"{swapped} swaps recorded for {lossy} lossy instances"
    assert verify.returncode == 0 and report["failed"] == 0, report["failures"][:5]
