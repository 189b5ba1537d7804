"""Archive throughput over the network: a real `pacs-cae serve` driven by DCMTK.

Times storescu of a generated 512x512 12-bit MR series (60 slices by default), an IMAGE-level findscu,
a STUDY-level getscu, and a STUDY-level movescu to a local storescp, and prints images/s for each.
DCMTK runs with TCP_NODELAY=1 (Debian's build otherwise leaves Nagle on); the server sets it on its sockets.

    python benchmarks/archive_throughput.py [--slices 60] [--model cae-paper-init] [--database-url URL]

Reuses the end-to-end harness (tests/e2e) and the phantom factories (tests/archive) so the benchmark and
the tests exercise the same path.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.archive.factories import make_mr_series  # noqa: E402
from tests.e2e import dcmtk  # noqa: E402
from tests.e2e.server_process import free_port, pacs_cae_command, start_server, write_config  # noqa: E402


def _timed(label: str, rows: list[tuple[str, int, float]], n: int, fn) -> None:
    start = time.perf_counter()
    fn()
    rows.append((label, n, time.perf_counter() - start))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--model", default="cae-paper-init")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--min-psnr-db", type=float, default=None,
                        help="gate floor (default: the configured default; untrained weights need a low one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pacs-cae-bench-") as tmp:
        work = Path(tmp)
        port, move_port = free_port(), free_port()
        url = args.database_url or f"sqlite:///{work / 'archive.db'}"
        codec = {"model": args.model, "device": args.device}
        if args.min_psnr_db is not None:
            codec["min_psnr_db"] = args.min_psnr_db
        config = write_config(work / "bench.toml", data_dir=work / "data", port=port, database_url=url,
                              codec=codec, remotes={"BENCHSCP": move_port})
        series = make_mr_series(args.slices, 512, 512, 12, patient_id="BENCH", patient_name="Bench^Mark")
        study = str(series[0].StudyInstanceUID)
        (work / "in").mkdir()
        files = []
        for ds in series:
            path = work / "in" / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(str(path))
        if not url.startswith("sqlite"):
            subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], check=True, cwd=work)
        server = start_server(work, config, port)
        rows: list[tuple[str, int, float]] = []
        n = len(series)
        try:
            base = ["-aec", "PACSCAE", "-aet", "BENCHSCU"]
            where = ["127.0.0.1", str(port)]
            _timed("C-STORE (storescu)", rows, n, lambda: dcmtk.run(
                "storescu", [*base, *where, *files], timeout=3600))
            found: list = []
            _timed("C-FIND IMAGE (findscu)", rows, n, lambda: found.extend(dcmtk.find(
                port, "S", {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study,
                           "SeriesInstanceUID": str(series[0].SeriesInstanceUID), "SOPInstanceUID": ""},
                work / "find")))
            assert len(found) == n, f"findscu returned {len(found)} of {n}"
            (work / "get").mkdir()
            _timed("C-GET STUDY (getscu)", rows, n, lambda: dcmtk.run("getscu", [
                *base, "-S", "-od", str(work / "get"), *dcmtk.keys(
                    {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}), *where], timeout=3600))
            assert len(list((work / "get").iterdir())) == n
            (work / "move").mkdir()
            scp = subprocess.Popen([str(dcmtk.tool("storescp")), "-aet", "BENCHSCP", "-od", str(work / "move"),
                                    str(move_port)], env=dcmtk.environment())
            try:
                time.sleep(0.5)
                _timed("C-MOVE STUDY (movescu->storescp)", rows, n, lambda: dcmtk.run("movescu", [
                    *base, "-S", "-aem", "BENCHSCP", *dcmtk.keys(
                        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}), *where], timeout=3600))
            finally:
                scp.terminate()
                scp.wait(10)
            assert len(list((work / "move").iterdir())) == n
        finally:
            server.stop(signal.SIGTERM)

    print(f"\narchive throughput: {n} slices 512x512 12-bit, model {args.model}, device {args.device}, "
          f"database {url.split('://')[0]}")
    print(f"{'operation':<36} {'images':>6} {'seconds':>8} {'images/s':>9}")
    for label, count, seconds in rows:
        print(f"{label:<36} {count:>6} {seconds:>8.2f} {count / seconds:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
