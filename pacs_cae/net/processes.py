"""Several ``serve`` processes on one port (``server.processes``): the DICOM side of the archive on every core.

Why: one Python process runs its associations under one GIL, so with several modalities sending at once a
single ``serve`` is CPU-bound on one core however many the machine has (issue 12). Like a pre-forking web
server, the supervisor here binds the listening socket once and forks N children before any thread, model or
database connection exists; every child is a complete ``serve`` (its own archive, codecs and database pool)
accepting on the shared socket. The archive's consistency never depended on one process: every write is a
database transaction (PostgreSQL row locks; SQLite's file lock, with the children's write transactions
queued on an inter-process lock, :mod:`pacs_cae.store.db`), exactly as with ``serve`` beside ``pacs-cae
worker`` processes.

* **Accepting**: the socket is non-blocking, so a child that loses the race for a connection goes back to
  waiting. Each child publishes how many connections it holds in :class:`Load` (shared memory); one that
  holds more than a sibling waits a few milliseconds before accepting, so the idle sibling takes the
  connection: associations spread over the processes instead of piling on the first to wake.
* **Limits** apply per process, each ``ceil(limit / N)`` (:meth:`Limits.divided`): the totals stay within
  the configured ones (rounded up to a multiple of N); a peer whose associations land unevenly may meet its
  limit slightly early, and gets the same transient A-ASSOCIATE-RJ it would get at the limit.
* **Compression worker threads** run in child 0 only, so ``compression.serve_workers`` keeps its meaning.
* **Supervision**: SIGTERM/SIGINT to the supervisor stop every child (each drains its associations as a
  single ``serve`` does); a child that dies is restarted; one that cannot start (bad schema, no database)
  stops the whole service with its exit code, as a single ``serve`` would exit. A supervisor that is killed
  outright (SIGKILL, the OOM killer) leaves children with a new parent: each notices within one turn of its
  accept loop and stops as on SIGTERM, so a restarted service can bind the port again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from pynetdicom.association import Association

from pacs_cae.net.limits import GuardedAssociationServer

LOG = logging.getLogger(__name__)

#: A child that exits this soon after it started, this many times in a row, is not restarted again.
CRASH_WINDOW_S = 10.0
CRASH_LIMIT = 3
#: How long a busier child leaves a waiting connection to a less busy sibling before accepting it itself: per
#: connection it holds more, up to the cap (a sibling on a loaded machine may take a while to be scheduled).
YIELD_S = 0.005
YIELD_MAX_S = 0.02
#: How long the supervisor waits for a child to be listening.
START_TIMEOUT_S = 300.0


def resolve_processes(configured: int) -> int:
    """``server.processes``: 0 means one per CPU core."""
    return configured if configured > 0 else max(1, os.cpu_count() or 1)


class Load:
    """Connections each child holds, in shared memory (one slot per child; a restarted child starts at 0)."""

    def __init__(self, processes: int) -> None:
        self._slots = multiprocessing.get_context("fork").Array("i", processes, lock=False)

    def __len__(self) -> int:
        return len(self._slots)

    def publish(self, index: int, connections: int) -> None:
        self._slots[index] = connections

    def excess(self, index: int) -> int:
        """How many connections child ``index`` holds more than its least busy sibling (> 0: that one should
        take the next)."""
        others = [n for i, n in enumerate(self._slots) if i != index]
        return self._slots[index] - min(others) if others else 0


@dataclass(frozen=True)
class Listener:
    """What a child serves with: the shared listening socket, its index and the shared load."""

    socket: socket.socket
    index: int
    load: Load
    supervisor_pid: int = field(default_factory=os.getpid)  # built in the supervisor: its pid

    @property
    def processes(self) -> int:
        return len(self.load)


def bind(host: str, port: int, backlog: int = 128) -> socket.socket:
    """The listening socket every child accepts on (non-blocking: losing an accept race must not block)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


#: A child's body: serve with this listener until SIGTERM, call ``ready`` once listening; its exit code.
ChildMain = Callable[[Listener, Callable[[], None]], int]


class Supervisor:
    """Forks the children, restarts one that dies, stops them all on SIGTERM/SIGINT."""

    def __init__(self, sock: socket.socket, processes: int, child_main: ChildMain) -> None:
        self.sock = sock
        self.load = Load(processes)
        self.child_main = child_main
        self._context = multiprocessing.get_context("fork")  # the parent has no threads yet: fork is safe
        self._ready = self._context.Queue()
        self._children: dict[int, tuple[BaseProcess, float]] = {}
        self._quick_exits = dict.fromkeys(range(processes), 0)
        self.stop = threading.Event()

    def run(self) -> int:
        """Serve until signalled; the exit code (a child's, when one could not start)."""
        previous = {sig: signal.signal(sig, self._signalled) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            # the first child alone first: it migrates an empty embedded database before the others open it
            code = None
            for batch in ([0], list(range(1, len(self.load)))):
                for index in batch:
                    self._start(index)
                code = self._wait_until_listening(batch)
                if code is not None or self.stop.is_set():
                    break
            if code is None and not self.stop.is_set():
                LOG.info("%d serve processes listening on %s:%d", len(self.load), *self.sock.getsockname()[:2])
                code = self._supervise()
            return code or 0
        finally:
            self._stop_children()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _signalled(self, signum: int, _frame: Any) -> None:
        LOG.info("received %s, stopping %d serve processes", signal.Signals(signum).name, len(self._children))
        self.stop.set()

    def _start(self, index: int) -> None:
        self.load.publish(index, 0)
        child = self._context.Process(target=_child, name=f"serve-{index}", daemon=False,
                                      args=(self.child_main, Listener(self.sock, index, self.load), self._ready))
        child.start()
        self._children[index] = (child, time.monotonic())

    def _wait_until_listening(self, indices: list[int]) -> int | None:
        """None once these children listen; else the exit code of one that ended first (or 1 on timeout)."""
        waiting = set(indices)
        deadline = time.monotonic() + START_TIMEOUT_S
        while waiting and not self.stop.is_set():
            try:
                waiting.discard(self._ready.get(timeout=0.2))
            except Exception:  # noqa: BLE001, S110 - queue.Empty: check the children below
                pass
            for index in list(waiting):
                child = self._children[index][0]
                if not child.is_alive():
                    LOG.error("serve process %d exited with %s before listening", index, child.exitcode)
                    return child.exitcode or 1
            if time.monotonic() > deadline:
                LOG.error("serve processes %s not listening after %.0f s", sorted(waiting), START_TIMEOUT_S)
                return 1
        return None

    def _supervise(self) -> int:
        while not self.stop.wait(0.5):
            for index, (child, started) in list(self._children.items()):
                if child.is_alive():
                    continue
                quick = time.monotonic() - started < CRASH_WINDOW_S
                self._quick_exits[index] = self._quick_exits[index] + 1 if quick else 0
                if self._quick_exits[index] >= CRASH_LIMIT:
                    LOG.error("serve process %d exited %d times within %.0f s of starting; stopping", index,
                              CRASH_LIMIT, CRASH_WINDOW_S)
                    return 1
                LOG.error("serve process %d exited with %s; restarting it", index, child.exitcode)
                self._start(index)
        return 0

    def _stop_children(self) -> None:
        children = [child for child, _ in self._children.values()]
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(60)  # each waits up to its grace time for open associations
            if child.is_alive():
                LOG.warning("serve process %s did not stop; killing it", child.name)
                child.kill()
                child.join(5)
        self.sock.close()


def _child(child_main: ChildMain, listener: Listener, ready: Any) -> None:
    """The forked child: its log lines carry its index; it tells the supervisor when it listens."""
    tag = f"[{listener.index}]"

    def tagged(record: logging.LogRecord) -> bool:
        if not record.name.endswith(tag):
            record.name = f"{record.name}{tag}"
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tagged)
    os._exit(child_main(listener, lambda: ready.put(listener.index)))


class SharedSocketServer(GuardedAssociationServer):
    """A child's server: accepts on the supervisor's socket instead of binding one, and defers to idle siblings.

    Built per child by :meth:`for_listener` (pynetdicom's ``make_server`` constructs the class itself).
    """

    listener: Listener
    _orphaned = False  # set once this child asked itself to stop because the supervisor is gone

    @classmethod
    def for_listener(cls, listener: Listener) -> type[SharedSocketServer]:
        return type(cls.__name__, (cls,), {"listener": listener})

    def server_bind(self) -> None:
        if self.socket is not None:
            self.socket.close()  # the fresh socket socketserver made; the shared one is already listening
        self.socket = self.listener.socket
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Listening since the supervisor bound it."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept, after a short pause when a sibling holds fewer connections (it takes this one then, and
        the accept here fails with BlockingIOError, which socketserver ignores)."""
        excess = self.listener.load.excess(self.listener.index)
        if excess > 0:
            time.sleep(min(YIELD_MAX_S, YIELD_S * excess))
        return super().get_request()

    # the count changes where a connection is accepted, admitted (or refused) and closed
    def process_request(self, request: Any, client_address: Any) -> None:
        super().process_request(request, client_address)
        self._publish()

    def admit(self, assoc: Association) -> tuple[int, int, int] | None:
        try:
            return super().admit(assoc)
        finally:
            self._publish()

    def release(self, assoc: Association) -> None:
        super().release(assoc)
        self._publish()

    def service_actions(self) -> None:
        """Each turn of the accept loop (a pending connection's socket may have closed meanwhile)."""
        super().service_actions()
        self._publish()
        self._stop_if_orphaned()

    def _stop_if_orphaned(self) -> None:
        """A supervisor killed with SIGKILL cannot stop its children: each notices it has a new parent and
        stops itself as SIGTERM would (open associations drain), so no orphan keeps serving the port."""
        if os.getppid() != self.listener.supervisor_pid and not self._orphaned:
            self._orphaned = True
            LOG.error("the supervisor (pid %d) is gone; this serve process stops", self.listener.supervisor_pid)
            os.kill(os.getpid(), signal.SIGTERM)

    def _publish(self) -> None:
        self.listener.load.publish(self.listener.index, self.connections)


__all__ = ["ChildMain", "Listener", "Load", "SharedSocketServer", "Supervisor", "bind", "resolve_processes"]
