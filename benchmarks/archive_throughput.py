"""Archive throughput over the network: a real `pacs-cae serve` driven by DCMTK, per codec configuration.

For each configuration a fresh server and database: storescu of a generated 512x512 12-bit MR series (60
slices by default), an IMAGE-level findscu, a STUDY-level getscu and a STUDY-level movescu to a local
storescp. The table gives images/s and, because this machine is noisy, the ratio of each time to the
lossless reference measured in the same run (the archive with ``codec.model = "none"``: same server, same
database, no CAE); then the server's resident memory (RSS after start, peak = VmHWM over the whole run, at
the end); and what `pacs-cae stats` says each configuration stored.

    python benchmarks/archive_throughput.py [--slices 60] [--model cae-paper] [--configs lossless,cae,cae+gate]
        [--min-psnr-db 20] [--database-url URL] [--device auto]

DCMTK runs with TCP_NODELAY=1 (Debian's build otherwise leaves Nagle on); the server sets it on its sockets.
Reuses the end-to-end harness (tests/e2e) and the phantom factories (tests/archive), so the benchmark and
the tests exercise the same path.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.archive.factories import make_mr_series, set_pixels  # noqa: E402
from tests.e2e import dcmtk  # noqa: E402
from tests.e2e.server_process import (  # noqa: E402
    clean_environment,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)

OPERATIONS = ("C-STORE", "C-FIND", "C-GET", "C-MOVE")


def codec_config(name: str, model: str, device: str, min_psnr_db: float) -> dict:
    """The [codec] table of one benchmarked configuration."""
    if name == "lossless":
        return {"model": "none", "device": device}
    if name == "cae":
        return {"model": model, "device": device, "gate": False}
    if name == "cae+gate":
        return {"model": model, "device": device, "gate": True, "min_psnr_db": min_psnr_db}
    raise SystemExit(f"unknown configuration {name!r} (lossless, cae, cae+gate)")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident set now and its peak so far (Linux /proc), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}


def run_one(work: Path, files: list[str], study: str, series_uid: str, codec: dict,
            url: str | None) -> tuple[dict, dict, dict]:
    """Seconds per operation, the stats figures and the server's memory (MB), for one fresh server."""
    work.mkdir(parents=True)
    port, move_port = free_port(), free_port()
    url = url or f"sqlite:///{work / 'archive.db'}"
    config = write_config(work / "bench.toml", data_dir=work / "data", port=port, database_url=url,
                          codec=codec, remotes={"BENCHSCP": move_port})
    if not url.startswith("sqlite"):
        subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], check=True, cwd=work)
    n = len(files)
    seconds: dict[str, float] = {}
    server = start_server(work, config, port)
    memory = {"start": memory_mb(server.proc.pid)["rss"]}
    try:
        base, where = ["-aec", "PACSCAE", "-aet", "BENCHSCU"], ["127.0.0.1", str(port)]
        study_keys = dcmtk.keys({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
        seconds["C-STORE"] = _timed(lambda: dcmtk.run("storescu", [*base, *where, *files], timeout=3600))
        found: list = []
        seconds["C-FIND"] = _timed(lambda: found.extend(dcmtk.find(
            port, "S", {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study, "SeriesInstanceUID": series_uid,
                        "SOPInstanceUID": ""}, work / "find")))
        assert len(found) == n, f"findscu returned {len(found)} of {n}"
        (work / "get").mkdir()
        seconds["C-GET"] = _timed(lambda: dcmtk.run(
            "getscu", [*base, "-S", "-od", str(work / "get"), *study_keys, *where], timeout=3600))
        assert len(list((work / "get").iterdir())) == n
        (work / "move").mkdir()
        scp = subprocess.Popen([str(dcmtk.tool("storescp")), "-aet", "BENCHSCP", "-od", str(work / "move"),
                                str(move_port)], env=dcmtk.environment())
        try:
            time.sleep(0.5)
            seconds["C-MOVE"] = _timed(lambda: dcmtk.run(
                "movescu", [*base, "-S", "-aem", "BENCHSCP", *study_keys, *where], timeout=3600))
        finally:
            scp.terminate()
            scp.wait(10)
        assert len(list((work / "move").iterdir())) == n
        stats = subprocess.run([*pacs_cae_command(), "stats", "--json", "--config", str(config)], cwd=work,
                               capture_output=True, text=True, check=True, env=clean_environment())
        now = memory_mb(server.proc.pid)
        memory.update(peak=now["peak"], end=now["rss"])
    finally:
        server.stop(signal.SIGTERM)
    return seconds, json.loads(stats.stdout), memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--model", default="cae-paper")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--configs", default="lossless,cae,cae+gate",
                        help="comma-separated: lossless (reference, always run first), cae, cae+gate")
    parser.add_argument("--min-psnr-db", type=float, default=20.0,
                        help="gate floor for cae+gate (the phantom's level, so slices stay on the CAE path)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--volume", type=Path, default=None,
                        help="a NIfTI brain volume: slices resampled to 512x512 12-bit instead of the phantom")
    args = parser.parse_args()
    names = ["lossless"] + [c for c in args.configs.split(",") if c and c != "lossless"]

    series = make_mr_series(args.slices, 512, 512, 12, patient_id="BENCH", patient_name="Bench^Mark")
    source = "phantom"
    if args.volume:  # real anatomy: the evaluation's slices (resampled to 512, 12-bit) in the same datasets
        from pacs_cae.train.eval_slices import load_eval_slices

        slices = load_eval_slices([args.volume], count=args.slices, size=512, bits=12)
        series = series[: len(slices)]
        for ds, eval_slice in zip(series, slices):
            set_pixels(ds, eval_slice.pixels, bits_stored=12, signed=False)
        source = args.volume.name
    results: dict[str, tuple[dict, dict, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="pacs-cae-bench-") as tmp:
        files = []
        (Path(tmp) / "in").mkdir()
        for ds in series:
            path = Path(tmp) / "in" / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(str(path))
        for name in names:
            codec = codec_config(name, args.model, args.device, args.min_psnr_db)
            results[name] = run_one(Path(tmp) / name.replace("+", "-"), files, str(series[0].StudyInstanceUID),
                                    str(series[0].SeriesInstanceUID), codec, args.database_url)

    n = len(series)
    db = (args.database_url or "sqlite").split(":")[0]
    print(f"\narchive throughput: {n} slices 512x512 12-bit ({source}), model {args.model}, device {args.device}, "
          f"database {db}; x = time / lossless reference time in this run")
    print(f"{'configuration':<10} " + " ".join(f"{op + ' img/s':>13} {'x':>5}" for op in OPERATIONS))
    reference = results["lossless"][0]
    for name, (seconds, _, _) in results.items():
        cells = [f"{n / seconds[op]:>13.1f} {seconds[op] / reference[op]:>5.2f}" for op in OPERATIONS]
        print(f"{name:<10} " + " ".join(cells))
    print(f"\n{'configuration':<10} {'RSS start MB':>12} {'peak MB':>9} {'x':>5} {'end MB':>8}")
    peak_reference = results["lossless"][2]["peak"]
    for name, (_, _, memory) in results.items():
        print(f"{name:<10} {memory['start']:>12.0f} {memory['peak']:>9.0f} {memory['peak'] / peak_reference:>5.2f} "
              f"{memory['end']:>8.0f}")
    print(f"\n{'configuration':<10} {'stored as':<28} {'original MB':>11} {'stored MB':>10} {'ratio':>7}")
    for name, (_, stats, _) in results.items():
        storage = ", ".join(f"{g['storage']}:{g['instances']}" for g in stats["by_storage"])
        print(f"{name:<10} {storage:<28} {stats['original_bytes'] / 1e6:>11.2f} "
              f"{stats['stored_bytes'] / 1e6:>10.2f} {stats['ratio'] or 0:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
