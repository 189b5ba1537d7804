"""Run DCMTK's command-line tools the way a site would, and read back what they wrote.

pynetdicom installs Python apps with the same names (echoscu, storescu, ...) into the venv's bin/, ahead of
DCMTK on PATH; :func:`tool` skips those and returns the real (ELF) DCMTK binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

TOOLS = ("echoscu", "storescu", "findscu", "getscu", "movescu", "storescp")


@cache
def tool(name: str) -> str | None:
    """Absolute path of the DCMTK binary ``name`` (None if DCMTK is not installed)."""
    for directory in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin", "/usr/local/bin"]:
        candidate = Path(directory or ".") / name
        try:
            with candidate.open("rb") as fh:
                if fh.read(4) == b"\x7fELF" and os.access(candidate, os.X_OK):
                    return str(candidate)
        except OSError:
            continue
    return None


def missing_tools() -> list[str]:
    return [name for name in TOOLS if tool(name) is None]


def environment() -> dict[str, str]:
    """The tools' environment: TCP_NODELAY=1 (Debian's DCMTK otherwise leaves Nagle on)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def run(name: str, args: Sequence[str], *, timeout: float = 120, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; on ``check`` a non-zero exit fails with the tool's output in the message."""
    path = tool(name)
    assert path is not None, f"DCMTK {name} not found"
    proc = subprocess.run([path, *args], capture_output=True, text=True, timeout=timeout, env=environment(),
                          cwd=cwd, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def keys(identifier: dict[str, str]) -> list[str]:
    """``-k Keyword=value`` arguments (empty value = return key)."""
    out: list[str] = []
    for key, value in identifier.items():
        out += ["-k", f"{key}={value}"]
    return out


def find(port: int, root: str, identifier: dict[str, str], out_dir: Path, *, aet: str = "PACSCAE",
         timeout: float = 120) -> list[Dataset]:
    """findscu (``root`` "P" or "S"); every response identifier is extracted to a file and read back."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    run("findscu", ["-aec", aet, "-aet", "E2ESCU", f"-{root}", "-X", "-od", str(out_dir),
                    *keys(identifier), "127.0.0.1", str(port)], timeout=timeout)
    return [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))]


def read_dir(directory: Path) -> list[Dataset]:
    """Every DICOM file a retrieve wrote into ``directory``."""
    return [dcmread(p) for p in sorted(directory.iterdir()) if p.is_file()]
