"""`pacs-cae serve` and `pacs-cae worker` as real child processes: configuration file, start, readiness, stop."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacs_cae.testing import dcmtk

AE_TITLE = "PACSCAE"


#: Ports :func:`free_port` handed out in this process (never handed out twice).
_HANDED_OUT: set[int] = set()
#: Where :func:`free_port` looks: below the kernel's ephemeral range (see :func:`_ephemeral_low`).
_LOWEST_PORT = 10000


def _ephemeral_low() -> int:
    """The first port of the range the kernel gives outgoing connections (Linux; else the IANA default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def free_port() -> int:
    """A TCP port nobody listens on right now, for a server a test starts later.

    Taken below the ephemeral range: a port the OS picks (bind to 0) comes from that range, which every
    outgoing connection (a DCMTK client, a C-MOVE sub-association) also draws from, so by the time the server
    binds it a client socket may hold it (seen: Orthanc "port ... already in use" in CI).
    """
    rng = random.SystemRandom()
    high = _ephemeral_low()
    for _ in range(200):
        port = rng.randrange(_LOWEST_PORT, high) if high > _LOWEST_PORT + 100 else 0
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free TCP port found")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, *, data_dir: Path, port: int, database_url: str, codec: dict[str, Any],
                 remotes: dict[str, int], server: dict[str, Any] | None = None,
                 compression: dict[str, Any] | None = None) -> Path:
    """A TOML file in the documented format (deploy/pacs-cae.toml)."""
    lines = [f"data_dir = {_toml_value(str(data_dir))}", 'log_level = "INFO"', "", "[server]",
             f"ae_title = {_toml_value(AE_TITLE)}", 'host = "127.0.0.1"', f"port = {port}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (server or {}).items()]
    lines += ["", "[database]", f"url = {_toml_value(database_url)}", "", "[codec]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in codec.items()]
    lines += ["", "[compression]"] + [f"{k} = {_toml_value(v)}" for k, v in (compression or {}).items()]
    lines += ["", "[remotes]"]
    lines += [f'{aet} = {{ host = "127.0.0.1", port = {p} }}' for aet, p in remotes.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def pacs_cae_command() -> list[str]:
    """The installed console script next to this interpreter, else the module entry point."""
    script = Path(sys.executable).parent / "pacs-cae"
    if script.exists():
        return [str(script)]
    found = shutil.which("pacs-cae")
    return [found] if found else [sys.executable, "-c", "from pacs_cae.cli import app; app()"]


def clean_environment() -> dict[str, str]:
    """The caller's environment without PACS_CAE_* settings, which would override the test's file."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PACS_CAE_")}


@dataclass
class ServerProcess:
    """A running `pacs-cae serve`; its stdout+stderr go to ``log_path``."""

    proc: subprocess.Popen[bytes]
    port: int
    config: Path
    log_path: Path
    workdir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait; kills (and fails loudly via the return code) on timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def start_server(workdir: Path, config: Path, port: int, *, timeout: float = 180,
                 user: int | None = None, args: Sequence[str] = ()) -> ServerProcess:
    """Start the server (``args``: extra `serve` flags) and wait until a DCMTK echoscu gets an answer.

    ``user``: run it as this uid (and gid), e.g. so that file permissions apply to it when tests run as root.
    """
    log_path = workdir / "serve.log"
    log = log_path.open("wb")
    as_user = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    proc = subprocess.Popen([*as_user, *pacs_cae_command(), "serve", "--config", str(config), *args], cwd=workdir,
                            stdout=log, stderr=subprocess.STDOUT, env=clean_environment())
    log.close()
    server = ServerProcess(proc, port, config, log_path, workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise AssertionError(f"pacs-cae serve exited {proc.returncode} before answering:\n{server.log()}")
        if echo(port).returncode == 0:
            return server
        time.sleep(0.3)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"pacs-cae serve did not answer C-ECHO within {timeout:.0f} s:\n{server.log()}")


def drain(config: Path, workdir: Path, *, timeout: float = 600,
          args: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """``pacs-cae worker --drain --now``: compress everything stored so far (the deferred codec path)."""
    return subprocess.run([*pacs_cae_command(), "worker", "--drain", "--now", "--config", str(config), *args],
                          cwd=workdir, check=False, capture_output=True, text=True, timeout=timeout, env=clean_environment())


def start_worker(config: Path, workdir: Path, name: str) -> subprocess.Popen[bytes]:
    """A `pacs-cae worker` process (not draining: it polls for jobs until stopped), logging to ``<name>.log``."""
    with (workdir / f"{name}.log").open("ab") as log:
        return subprocess.Popen([*pacs_cae_command(), "worker", "--config", str(config)], cwd=workdir, stdout=log,
                                stderr=subprocess.STDOUT, env=clean_environment())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def echo(port: int) -> subprocess.CompletedProcess[str]:
    return dcmtk.run("echoscu", ["-aec", AE_TITLE, "-aet", "E2ESCU", "-to", "5", "127.0.0.1", str(port)],
                     check=False, timeout=30)
