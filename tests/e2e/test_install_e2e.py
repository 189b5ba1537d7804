"""A non-editable ``pip install .`` serves: migrations and the shipped models travel with the package.

The project is copied (without its virtual environment), installed into a fresh venv with ``--no-deps`` (the
dependencies come from the test venv through a ``.pth`` line, so no network is needed), and that venv's
``pacs-cae serve`` runs from an unrelated directory: it must create its SQLite schema from the packaged Alembic
revisions, load the default model from the installed data directory and answer C-ECHO.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from pacs_cae.testing import dcmtk
from pacs_cae.testing.server_process import echo, free_port

ROOT = Path(__file__).resolve().parents[2]
#: Not part of the source distribution: environments, caches, local data and build output.
NOT_SOURCES = (".venv", ".git", "runs", "pacs-cae-data", "build", "dist", "__pycache__", "*.egg-info",
               ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.whl")


def _environment() -> dict[str, str]:
    """No PACS_CAE_* settings and no PYTHONPATH: the installed package alone must be enough."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PACS_CAE_") and k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin/`` of a fresh venv holding a wheel install of this checkout."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True, timeout=60).stdout.strip())
    # the test venv's packages (torch, pydicom, pip, setuptools ...) after the new venv's own
    (site / "test-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    build = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                            "--no-build-isolation", "--no-index", str(source)],
                           cwd=work, check=False, capture_output=True, text=True, timeout=600, env=_environment())
    assert build.returncode == 0, build.stderr
    return venv / "bin"


def test_wheel_install_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    found = subprocess.run([str(installed / "python"), "-c", "import pacs_cae, sys; print(pacs_cae.__file__)"],
                           cwd=tmp_path, check=True, capture_output=True, text=True, timeout=60,
                           env=_environment()).stdout.strip()
    assert Path(found).is_relative_to(installed.parent), found
    assert not Path(found).is_relative_to(ROOT), found


def test_installed_serve_answers_c_echo_from_another_directory(installed: Path, tmp_path: Path) -> None:
    if dcmtk.missing_tools():
        pytest.fail(f"DCMTK tools not found: {dcmtk.missing_tools()}", pytrace=False)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(installed / "pacs-cae"), "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                env=_environment())
    try:
        deadline = time.monotonic() + 180
        answered = False
        while time.monotonic() < deadline and proc.poll() is None:
            if echo(port).returncode == 0:
                answered = True
                break
            time.sleep(0.3)
        text = log_path.read_text(errors="replace")
        assert answered, f"installed pacs-cae serve did not answer C-ECHO (exit {proc.poll()}):\n{text}"
        # the default model came from the install's data directory, the schema from the installed migrations
        assert "codec model cae-paper (sha256" in text, text
        assert (tmp_path / "pacs-cae-data" / "archive.db").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, log_path.read_text(errors="replace")
    db = subprocess.run([str(installed / "pacs-cae"), "db", "current"], cwd=tmp_path, check=False,
                        capture_output=True, text=True, timeout=120, env=_environment())
    assert db.returncode == 0 and "up to date" in db.stdout, db.stdout + db.stderr
