"""Issue 9, item 8: SQLite on read-only storage is reported at start and recovers without a restart.

The server runs as an unprivileged user (``nobody`` when the tests run as root, where file modes would not
bind), starts on a database file made read-only, refuses C-STOREs with 0xA700 (retryable), and stores again
as soon as the file is writable, in the same process.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import (
    AE_TITLE,
    clean_environment,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)

NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged server user can write (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="pacs-cae-ro-", dir="/tmp"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _store(port: int) -> int:
    ae = AE(ae_title="ROTEST")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(make_mr_series(1, 64, 64, 12, patient_id="RO")[0]).Status)
    finally:
        assoc.release()


def _unprivileged_user_can_run_the_checkout() -> bool:
    """Whether ``nobody`` can start this checkout's interpreter and import the package (not when the checkout
    lies under a directory private to root, e.g. one made by ``mktemp -d``)."""
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    try:
        probe = subprocess.run([*as_nobody, *pacs_cae_command(), "--help"], cwd="/tmp", env=clean_environment(),
                               capture_output=True, timeout=120, check=False)
    except OSError:
        return False
    return probe.returncode == 0


def test_sqlite_read_only_storage_warns_at_start_and_recovers_without_restart(shared_dir: Path) -> None:
    user = NOBODY if os.geteuid() == 0 else None
    if user is not None and not _unprivileged_user_can_run_the_checkout():
        pytest.skip("the checkout is not readable by 'nobody', which this test needs to run the server as "
                    "(as root, file modes would not bind)")
    port = free_port()
    data = shared_dir / "data"
    config = write_config(shared_dir / "pacs-cae.toml", data_dir=data, port=port,
                          database_url=f"sqlite:///{data / 'archive.db'}", codec={"model": "none"}, remotes={})
    server = start_server(shared_dir, config, port, user=user)  # creates and migrates the database
    try:
        assert _store(port) == 0x0000
    finally:
        assert server.stop() == 0
    db_files = [p for p in data.iterdir() if p.name.startswith("archive.db")]
    for path in db_files:
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    server = start_server(shared_dir, config, port, user=user)
    try:
        assert "read-only" in server.log() or "readonly" in server.log(), server.log()
        assert _store(port) == 0xA700  # refused, retryable: nothing acknowledged that is not stored
        for path in data.iterdir():  # SQLite gave the -wal/-shm files it created the database file's mode
            path.chmod(0o644)
        assert _store(port) == 0x0000, server.log()  # the same process writes again
    finally:
        server.stop()
