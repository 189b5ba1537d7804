"""Archive throughput over the network: a real `pacs-cae serve` driven by DCMTK, against Orthanc in the same run.

    python benchmarks/archive_throughput.py --slices 60 --configs lossless,cae+gate --associations 1,4 \
        [--model cae-paper] [--min-psnr-db 20] [--database-url URL] [--device auto] [--volume NIfTI] \
        [--processes N]

For each configuration (``lossless`` = ``codec.model = "none"``, kept in JPEG-LS; ``lossless-smallest``: the same,
re-coded in the smallest of JPEG-LS, JPEG 2000 and JPEG-XL; ``cae`` / ``cae+gate`` = the learned codec, without / with the quality floors) and each association count, a fresh server and database: the generated
512x512 12-bit MR series (60 slices by default) is sent with storescu (split over N parallel associations),
the backlog is drained by one in-process worker (for ``lossless``: the lossless jobs that re-code C-STORE's
verbatim copies in their final exact coding), then N parallel IMAGE-level
findscu, STUDY-level getscu and STUDY-level movescu (to a local storescp --fork) run on the stored series.
Before the timed study each server (Orthanc too) takes a 4-slice warm-up study through every operation,
untimed, so the figures are a running archive's, not a cold start's (a fresh database file grows, lazy
initialisation runs, the first statements are compiled); stored bytes count the timed study only.
When Debian's Orthanc 1.10 is installed (``/usr/sbin/Orthanc``) the same operations run against it, started
here on loopback with TCP_NODELAY=1, its own configuration and storage in a temporary directory, stopped by
its pid. DCMTK runs with TCP_NODELAY=1 (Debian's build otherwise leaves Nagle on); the server sets it too.

One table: images/s per operation with x = pacs-cae / Orthanc images/s at the same association count (this
machine is noisy: read the ratios), the drain rate (slices/s, one worker) and stored bytes per slice; below
it the codec's own batched encode and decode rates on the same slices (the references of the drain target
and of the learned-codec retrieve overhead). Reuses the end-to-end harness (tests/e2e) and the phantom
factories (tests/archive), so the benchmark and the tests exercise the same path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series, set_pixels
from pacs_cae.testing.server_process import (
    clean_environment,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)

OPERATIONS = ("C-STORE", "C-FIND", "C-GET", "C-MOVE")
#: Slices of the warm-up study each server gets, through every operation, before the timed run.
WARM_UP_SLICES = 4


@dataclass(frozen=True)
class Study:
    """A benchmarked study on disk: its files and UIDs."""

    files: list[str]
    study_uid: str
    series_uid: str

    @classmethod
    def write(cls, series: list, directory: Path) -> Study:
        directory.mkdir(parents=True)
        files = []
        for ds in series:
            path = directory / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(str(path))
        return cls(files, str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID))


def codec_config(name: str, model: str, device: str, min_psnr_db: float) -> dict:
    """The [codec] table of one benchmarked configuration."""
    if name == "lossless":  # the default: JPEG-LS, the fastest exact coding to decode
        return {"model": "none", "device": device}
    if name == "lossless-smallest":  # every exact coding tried, the smallest kept per slice (JPEG-XL mostly)
        return {"model": "none", "device": device, "lossless_methods": ["jpeg-ls", "jpeg-2000", "jpeg-xl"]}
    if name == "cae":
        return {"model": model, "device": device, "gate": False}
    if name == "cae+gate":
        return {"model": model, "device": device, "gate": True, "min_psnr_db": min_psnr_db}
    raise SystemExit(f"unknown configuration {name!r} (lossless, lossless-smallest, cae, cae+gate)")


def wait_for_scp(port: int, aet: str = "BENCHSCP", timeout: float = 60) -> None:
    """Wait until a storescp on ``port`` answers C-ECHO (a fixed sleep loses on a loaded machine: A801)."""
    deadline = time.monotonic() + timeout
    while dcmtk.run("echoscu", ["-aec", aet, "-to", "5", "127.0.0.1", str(port)], check=False,
                    timeout=30).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"storescp on port {port} did not answer C-ECHO within {timeout:.0f} s")
        time.sleep(0.2)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident set now and its peak so far (Linux /proc), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}


def run_one(work: Path, study: Study, warm_up: Study, codec: dict, url: str | None, associations: int = 1,
            processes: int = 1) -> tuple[dict, dict, dict]:
    """Seconds per operation, the stats figures of the timed study and the server's memory (MB), for one fresh
    server that first took the warm-up study through every operation and its drain (untimed)."""
    work.mkdir(parents=True)
    port, move_port = free_port(), free_port()
    url = url or f"sqlite:///{work / 'archive.db'}"
    config = write_config(work / "bench.toml", data_dir=work / "data", port=port, database_url=url,
                          codec=codec, remotes={"BENCHSCP": move_port}, server={"processes": processes},
                          compression={"serve_workers": 0})  # the drain below is the only worker
    if not url.startswith("sqlite"):
        subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], check=True, cwd=work)
    n = len(study.files)
    seconds: dict[str, float] = {}
    server = start_server(work, config, port)
    memory = {"start": memory_mb(server.proc.pid)["rss"]}
    try:
        _parallel_operations(work / "warm-up", warm_up, 1, port, "PACSCAE", move_port,
                             after_store=lambda: _drain(config, len(warm_up.files)))
        before = _stats(config, work)
        # the same DCMTK command lines as against Orthanc, whatever the association count
        seconds.update(_parallel_operations(work, study, associations, port, "PACSCAE", move_port,
                                            after_store=lambda: seconds.update(_drain(config, n))))
        stats = _stats_since(before, _stats(config, work))
        now = memory_mb(server.proc.pid)
        memory.update(peak=now["peak"], end=now["rss"])
    finally:
        server.stop(signal.SIGTERM)
    return seconds, stats, memory


# ---- the operations, the backlog drain, Orthanc side by side -------------------------------------------

ORTHANC = "/usr/sbin/Orthanc"


def _stats(config: Path, work: Path) -> dict:
    """What `pacs-cae stats --json` says about the benchmarked archive."""
    proc = subprocess.run([*pacs_cae_command(), "stats", "--json", "--config", str(config)], cwd=work,
                          capture_output=True, text=True, check=True, env=clean_environment())
    return json.loads(proc.stdout)


def _stats_since(before: dict, after: dict) -> dict:
    """The stats figures the benchmark reads (stored bytes, instances per storage kind), less ``before``."""
    def counts(s: dict) -> dict[str, int]:
        return {g["storage"]: g["instances"] for g in s["by_storage"]}

    was, now = counts(before), counts(after)
    return {"stored_pixel_bytes": after["stored_pixel_bytes"] - before["stored_pixel_bytes"],
            "by_storage": [{"storage": k, "instances": v - was.get(k, 0)} for k, v in now.items()
                           if v - was.get(k, 0)]}


def _drain(config: Path, n: int) -> dict[str, float]:
    """Seconds one in-process worker takes to empty the backlog (model loaded before the clock starts)."""
    from pacs_cae.archive.service import Archive
    from pacs_cae.config import load_settings

    with Archive.open(load_settings(config)) as archive:
        start = time.perf_counter()
        report = archive.compress_pending(ignore_delay=True)
        elapsed = time.perf_counter() - start
    assert report.instances == n, f"drain handled {report.instances} of {n} slices"
    return {"drain": elapsed}


def codec_rates(series: list, model: str, device: str, batch_size: int = 0) -> tuple[float, float, int]:
    """The codec's own batched encode and decode rates on the benchmark's slices (slices/s), as
    benchmarks/codec_speed.py measures them: the references of the drain and of the learned-codec retrieves.
    ``batch_size`` slices per forward, 0 = the device's (what the archive uses by default); also returned."""
    from pacs_cae.codec import CodecRegistry
    from pacs_cae.codec.device import forward_batch, resolve_device

    batch_size = forward_batch(batch_size, resolve_device(device))
    codec = CodecRegistry(None, device, max_batch=batch_size).get(model)
    slices = [ds.pixel_array for ds in series]
    codec.decode(codec.encode(slices[:8], bits_stored=12))  # warm-up
    blobs: list[bytes] = []
    encode_s = _timed(lambda: blobs.extend(codec.encode(slices, bits_stored=12)))
    decode_s = _timed(lambda: codec.decode(blobs))
    return len(slices) / encode_s, len(slices) / decode_s, batch_size


def _parallel(commands: list[list[str]], timeout: float = 3600) -> float:
    """Run DCMTK command lines at once; seconds until the last one exits (each must succeed)."""
    def one(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return dcmtk.run(cmd[0], cmd[1:], timeout=timeout)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        list(pool.map(one, commands))
    return time.perf_counter() - start


def _parallel_operations(work: Path, timed: Study, associations: int, port: int, aet: str, move_port: int,
                         after_store: Callable[[], object] | None = None) -> dict[str, float]:
    """C-STORE split over N associations, then N concurrent C-FIND, C-GET and C-MOVE of the whole study."""
    files, study, series_uid = timed.files, timed.study_uid, timed.series_uid
    work.mkdir(parents=True, exist_ok=True)
    n, where = len(files), ["127.0.0.1", str(port)]
    base = ["-aec", aet, "-aet", "BENCHSCU"]
    study_keys = dcmtk.keys({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
    parts = [files[i::associations] for i in range(associations)]
    seconds = {"C-STORE": _parallel([["storescu", *base, *where, *part] for part in parts])}
    if after_store is not None:
        after_store()
    image_keys = dcmtk.keys({"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study,
                             "SeriesInstanceUID": series_uid, "SOPInstanceUID": ""})
    finds = [["findscu", *base, "-S", "-X", "-od", str(work / f"find{i}"), *image_keys, *where]
             for i in range(associations)]
    for i in range(associations):
        (work / f"find{i}").mkdir(parents=True, exist_ok=True)
        (work / f"get{i}").mkdir(parents=True, exist_ok=True)
    seconds["C-FIND"] = _parallel(finds)
    assert all(len(list((work / f"find{i}").glob("rsp*.dcm"))) == n for i in range(associations))
    seconds["C-GET"] = _parallel([["getscu", *base, "-S", "-od", str(work / f"get{i}"), *study_keys, *where]
                                  for i in range(associations)])
    assert all(len(list((work / f"get{i}").iterdir())) == n for i in range(associations))
    move_dir = work / "move-parallel"
    move_dir.mkdir()
    scp = subprocess.Popen([str(dcmtk.tool("storescp")), "--fork", "-aet", "BENCHSCP", "+uf", "-od", str(move_dir),
                            str(move_port)], env=dcmtk.environment())
    try:
        wait_for_scp(move_port)
        seconds["C-MOVE"] = _parallel([["movescu", *base, "-S", "-aem", "BENCHSCP", *study_keys, *where]
                                       for _ in range(associations)])
    finally:
        scp.terminate()
        scp.wait(10)
    assert len(list(move_dir.iterdir())) == n * associations
    return seconds


def _orthanc_config(work: Path, port: int, move_port: int) -> Path:
    config = {
        "Name": "bench", "StorageDirectory": str(work / "storage"), "IndexDirectory": str(work / "index"),
        "DicomAet": "ORTHANC", "DicomPort": port, "HttpServerEnabled": False, "HttpPort": free_port(),
        "RemoteAccessAllowed": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True, "DicomCheckModalityHost": False, "StorageCompression": False,
        "SyncStorageArea": True, "Plugins": [],
        "DicomModalities": {"BENCHSCP": ["BENCHSCP", "127.0.0.1", move_port],
                            "BENCHSCU": ["BENCHSCU", "127.0.0.1", 104]},
    }
    path = work / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def run_orthanc(work: Path, study: Study, warm_up: Study, associations: int) -> tuple[dict, int]:
    """The same operations against a fresh Orthanc, warmed up the same way; (seconds, bytes the timed study
    added on disk)."""
    work.mkdir(parents=True)
    port, move_port = free_port(), free_port()
    config = _orthanc_config(work, port, move_port)
    env = dict(os.environ, TCP_NODELAY="1")
    log = (work / "orthanc.log").open("wb")
    proc = subprocess.Popen([ORTHANC, str(config)], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while dcmtk.run("echoscu", ["-aec", "ORTHANC", "-to", "5", "127.0.0.1", str(port)], check=False,
                        timeout=30).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (work / "orthanc.log").read_text()
            time.sleep(0.3)
        _parallel_operations(work / "warm-up", warm_up, 1, port, "ORTHANC", move_port)
        before = _disk_bytes(work / "storage")
        seconds = _parallel_operations(work, study, associations, port, "ORTHANC", move_port)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # stopped by its pid
        proc.wait(60)
        log.close()
    return seconds, _disk_bytes(work / "storage") - before


def _disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def print_table(n: int, source: str, args: argparse.Namespace, rows: dict[tuple[str, int], dict],
                stats: dict[tuple[str, int], dict], orthanc: dict[int, tuple[dict, int]],
                rates: tuple[float, float, int] | None) -> None:
    """One table from one run: images/s per operation and association count, x = pacs-cae / Orthanc images/s
    at the same association count (else / the lossless configuration), drain rate and stored bytes."""
    reference_name = "Orthanc" if orthanc else "lossless"
    db = (args.database_url or "sqlite").split(":")[0]
    print(f"\narchive throughput: {n} slices 512x512 12-bit ({source}), model {args.model}, device {args.device}, "
          f"database {db}, {args.processes} serve process(es) (server.processes), DCMTK clients; x = images/s / {reference_name} images/s at the same association count, "
          "in this run (each retrieve association fetches the whole study)")
    header = " ".join(f"{op + ' img/s':>13} {'x':>5}" for op in OPERATIONS)
    print(f"{'system':<10} {'assoc':>5} {header} {'drain sl/s':>10} {'stored B/slice':>14}  stored as")
    table = dict(rows)
    for assoc, (seconds, _) in orthanc.items():
        table[("Orthanc", assoc)] = seconds
    for (name, assoc), seconds in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0] != "Orthanc", kv[0][0])):
        ref = orthanc[assoc][0] if orthanc else table[("lossless", assoc)]
        cells = []
        for op in OPERATIONS:
            images = n if op == "C-STORE" else n * assoc
            cells.append(f"{images / seconds[op]:>13.1f} {ref[op] / seconds[op]:>5.2f}")
        drain = f"{n / seconds['drain']:.1f}" if "drain" in seconds else "-"
        if name == "Orthanc":
            stored, storage = orthanc[assoc][1] / n, "files on disk"
        else:
            s = stats[(name, assoc)]
            stored = s["stored_pixel_bytes"] / n
            storage = ", ".join(f"{g['storage']}:{g['instances']}" for g in s["by_storage"])
        print(f"{name:<10} {assoc:>5} {' '.join(cells)} {drain:>10} {stored:>14.0f}  {storage}")
    if rates is None:
        return
    encode_per_s, decode_per_s, batch = rates
    print(f"\ncodec {args.model} alone on these slices ({batch} per forward, as the archive's codec.batch_size = 0 "
          f"on this device; benchmarks/codec_speed.py): "
          f"encode {encode_per_s:.1f} slices/s, decode {decode_per_s:.1f} slices/s")
    for (name, assoc), seconds in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if "drain" not in seconds or name.startswith("lossless"):  # its drain re-codes: no codec rate to compare
            continue
        drain = n / seconds["drain"]
        decode_s = n * assoc / decode_per_s  # every association decodes the whole study
        overhead = {op: seconds[op] / decode_s - 1 for op in ("C-GET", "C-MOVE")}
        # the floors decode every encoded slice before the swap (the lossless copy goes only after that), so
        # the drain cannot beat encode + decode: its ceiling, and how close the drain comes to it
        verified_per_s = 1 / (1 / encode_per_s + 1 / decode_per_s)
        print(f"{name:<10} {assoc:>5} drain/encode {drain / encode_per_s:.2f} (target >= 0.80; ceiling with the "
              f"floors' decode {verified_per_s / encode_per_s:.2f}, drain / that rate {drain / verified_per_s:.2f}); "
              f"network+DB overhead over the codec's decode: C-GET {overhead['C-GET']:+.0%}, "
              f"C-MOVE {overhead['C-MOVE']:+.0%} (target <= +25%)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--model", default="cae-paper")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--configs", default="lossless,cae,cae+gate",
                        help="comma-separated: lossless (reference, always run first), lossless-smallest, cae, cae+gate")
    parser.add_argument("--min-psnr-db", type=float, default=20.0,
                        help="gate floor for cae+gate (the phantom's level, so slices stay on the CAE path)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--volume", type=Path, default=None,
                        help="a NIfTI brain volume: slices resampled to 512x512 12-bit instead of the phantom")
    parser.add_argument("--associations", default="1",
                        help="comma-separated association counts for the issue-12 table, e.g. 1,4")
    parser.add_argument("--processes", type=int, default=1,
                        help="server.processes of the benchmarked pacs-cae serve (0 = one per CPU core)")
    parser.add_argument("--orthanc", choices=("auto", "off"), default="auto",
                        help=f"run Orthanc ({ORTHANC}) side by side when installed")
    args = parser.parse_args()
    counts = sorted({int(a) for a in args.associations.split(",") if a})
    names = ["lossless"] + [c for c in args.configs.split(",") if c and c != "lossless"]

    series = make_mr_series(args.slices, 512, 512, 12, patient_id="BENCH", patient_name="Bench^Mark")
    source = "phantom"
    if args.volume:  # real anatomy: the evaluation's slices (resampled to 512, 12-bit) in the same datasets
        from pacs_cae.evaluation.eval_slices import load_eval_slices

        slices = load_eval_slices([args.volume], count=args.slices, size=512, bits=12)
        series = series[: len(slices)]
        for ds, eval_slice in zip(series, slices):
            set_pixels(ds, eval_slice.pixels, bits_stored=12, signed=False)
        source = args.volume.name
    results: dict[str, tuple[dict, dict, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="pacs-cae-bench-") as tmp:
        study = Study.write(series, Path(tmp) / "in")
        warm_up = Study.write(make_mr_series(WARM_UP_SLICES, 512, 512, 12, patient_id="WARMUP",
                                             patient_name="Warm^Up"), Path(tmp) / "warm-up")
        for name in names:
            codec = codec_config(name, args.model, args.device, args.min_psnr_db)
            results[name] = run_one(Path(tmp) / name.replace("+", "-"), study, warm_up, codec, args.database_url,
                                    processes=args.processes)
        # issue 12: more associations, Orthanc side by side, the codec's batched encode rate
        rows = {(name, 1): seconds for name, (seconds, _, _) in results.items()}
        stats_by = {(name, 1): stats for name, (_, stats, _) in results.items()}
        for assoc in (a for a in counts if a > 1):
            for name in names:
                codec = codec_config(name, args.model, args.device, args.min_psnr_db)
                rows[(name, assoc)], stats_by[(name, assoc)], _ = run_one(
                    Path(tmp) / f"{name.replace('+', '-')}-x{assoc}", study, warm_up, codec, args.database_url,
                    associations=assoc, processes=args.processes)
        orthanc: dict[int, tuple[dict, int]] = {}
        if args.orthanc == "auto" and shutil.which(ORTHANC):
            for assoc in counts:
                orthanc[assoc] = run_orthanc(Path(tmp) / f"orthanc-x{assoc}", study, warm_up, assoc)
        learned = any(not name.startswith("lossless") for name in names)
        rates = codec_rates(series, args.model, args.device) if learned else None

    print_table(len(series), source, args, rows, stats_by, orthanc, rates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
