"""What pynetdicom itself costs: bare C-GET and C-STORE SCPs against `pacs-cae serve`, and association setup.

    python benchmarks/network_floor.py [--slices 60] [--repeat 5]

A bare pynetdicom AE (TCP_NODELAY, nothing but a C-GET handler that yields the phantom series from memory:
no database, no decoding, no rebuilding) and a real `pacs-cae serve` (lossless archive, drained, so its
slices are stored in their smallest exact coding) each serve the same study to DCMTK `getscu` ``--repeat``
times; the medians, and the archive's images/s as a fraction of the bare SCP's. Also the median time a
pynetdicom peer takes to open an association to `pacs-cae serve` (A-ASSOCIATE-RQ to AC) and to release it.
The bare SCP is the ceiling of any pynetdicom-based sender on this machine: the reference for the archive's
retrieve overhead. Likewise for C-STORE: a bare pynetdicom C-STORE SCP that decodes each data set and answers
0x0000 (nothing stored) and `pacs-cae serve` (lossless archive, no worker) each take ``--repeat`` fresh copies
of the study from DCMTK `storescu`; the difference per slice is what the archive's ingest adds (validation,
metadata blob, index rows and job, commit) while the modality waits.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage, StudyRootQueryRetrieveInformationModelGet, Verification

from pacs_cae.net.ae import set_tcp_nodelay  # the archive's own handler (not its reactor)
from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import free_port, start_server, write_config

sys.path.insert(0, str(Path(__file__).parent))
from archive_throughput import Study, _drain  # the throughput benchmark's helpers


def bare_scp(series: list, port: int) -> Any:
    """A pynetdicom C-GET SCP yielding ``series`` from memory (returns the running server)."""
    def on_get(event: Any) -> Iterator[Any]:
        yield len(series)
        for ds in series:
            yield 0xFF00, ds

    ae = AE("BARESCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian], scp_role=True,
                             scu_role=True)
    return ae.start_server(("127.0.0.1", port), block=False,
                           evt_handlers=[(evt.EVT_C_GET, on_get), (evt.EVT_CONN_OPEN, set_tcp_nodelay)])


def bare_store_scp(port: int) -> Any:
    """A pynetdicom C-STORE SCP that decodes each data set and answers 0x0000, storing nothing."""
    def on_store(event: Any) -> int:
        event.dataset  # noqa: B018 - the decode every real SCP does
        return 0x0000

    ae = AE("BARESCP")
    ae.add_supported_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae.start_server(("127.0.0.1", port), block=False,
                           evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, set_tcp_nodelay)])


def store_seconds(port: int, aet: str, studies: list[Study]) -> list[float]:
    """Seconds per storescu of each study (one association each)."""
    times = []
    for study in studies:
        start = time.perf_counter()
        dcmtk.run("storescu", ["-aec", aet, "-aet", "FLOORSCU", "127.0.0.1", str(port), *study.files], timeout=600)
        times.append(time.perf_counter() - start)
    return times


def get_seconds(port: int, aet: str, study: str, out: Path, repeat: int) -> list[float]:
    """Seconds per whole-study getscu, ``repeat`` times (each into its own directory)."""
    keys = dcmtk.keys({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
    times = []
    for i in range(repeat):
        target = out / str(i)
        target.mkdir(parents=True)
        start = time.perf_counter()
        dcmtk.run("getscu", ["-aec", aet, "-aet", "FLOORSCU", "-S", "-od", str(target), *keys, "127.0.0.1",
                             str(port)], timeout=600)
        times.append(time.perf_counter() - start)
    return times


def association_ms(port: int, repeat: int) -> tuple[float, float]:
    """Median milliseconds to open and to release an association to ``port`` (pynetdicom peer)."""
    ae = AE("FLOORSCU")
    ae.add_requested_context(Verification)
    opened, released = [], []
    for _ in range(repeat + 2):
        start = time.perf_counter()
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSCAE")
        middle = time.perf_counter()
        assert assoc.is_established
        assoc.release()
        opened.append(middle - start)
        released.append(time.perf_counter() - middle)
    return statistics.median(opened[2:]) * 1000, statistics.median(released[2:]) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    series = make_mr_series(args.slices, 512, 512, 12, patient_id="FLOOR", patient_name="Floor^Bench")
    with tempfile.TemporaryDirectory(prefix="pacs-cae-floor-") as tmp:
        work = Path(tmp)
        study = Study.write(series, work / "in")
        # fresh UIDs for every C-STORE run, so the archive stores each (a re-send would be a duplicate)
        copies = [Study.write(make_mr_series(args.slices, 512, 512, 12, patient_id="FLOOR",
                                             patient_name="Floor^Bench", seed=i),
                              work / f"copy{i}") for i in range(2 * args.repeat)]
        port = free_port()
        server = bare_scp(series, port)
        try:
            bare = get_seconds(port, "BARESCP", study.study_uid, work / "bare", args.repeat)
        finally:
            server.shutdown()
        port = free_port()
        server = bare_store_scp(port)
        try:
            bare_store = store_seconds(port, "BARESCP", copies[: args.repeat])
        finally:
            server.shutdown()
        port = free_port()
        config = write_config(work / "floor.toml", data_dir=work / "data", port=port,
                              database_url=f"sqlite:///{work / 'archive.db'}", codec={"model": "none"}, remotes={},
                              compression={"serve_workers": 0})
        archive = start_server(work, config, port)
        try:
            store_seconds(port, "PACSCAE", [study])  # the study the C-GETs below retrieve
            stored = store_seconds(port, "PACSCAE", copies[args.repeat:])
            _drain(config, len(study.files) * (args.repeat + 1))
            served = get_seconds(port, "PACSCAE", study.study_uid, work / "archive", args.repeat)
            opened, released = association_ms(port, args.repeat * 5)
        finally:
            archive.stop(signal.SIGTERM)
    n = len(series)
    bare_rate, archive_rate = n / statistics.median(bare), n / statistics.median(served)
    print(f"\nC-GET of {n} slices 512x512 12-bit to DCMTK getscu, median of {args.repeat}:")
    print(f"{'server':<34} {'img/s':>8} {'ms/slice':>9} {'x':>5}")
    print(f"{'bare pynetdicom SCP (memory)':<34} {bare_rate:>8.1f} {1000 / bare_rate:>9.2f} {1.0:>5.2f}")
    print(f"{'pacs-cae serve (lossless, drained)':<34} {archive_rate:>8.1f} {1000 / archive_rate:>9.2f} "
          f"{archive_rate / bare_rate:>5.2f}")
    bare_store_rate, store_rate = n / statistics.median(bare_store), n / statistics.median(stored)
    print(f"\nC-STORE of {n} slices 512x512 12-bit from DCMTK storescu (one association), median of {args.repeat}:")
    print(f"{'server':<34} {'img/s':>8} {'ms/slice':>9} {'x':>5}")
    print(f"{'bare pynetdicom SCP (stores none)':<34} {bare_store_rate:>8.1f} {1000 / bare_store_rate:>9.2f} "
          f"{1.0:>5.2f}")
    print(f"{'pacs-cae serve (lossless)':<34} {store_rate:>8.1f} {1000 / store_rate:>9.2f} "
          f"{store_rate / bare_store_rate:>5.2f}")
    print(f"\nassociation to pacs-cae serve (pynetdicom peer, median of {args.repeat * 5}): "
          f"open {opened:.1f} ms, release {released:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
