"""`parley serve --workers N`: N instance processes sharing one listening socket.

The parent binds once and starts N children (spawn), each a whole instance: its own composition
root (chat/root.py), database pool, actors and Redis bridge instance id, serving on the
inherited sockets; the kernel hands each new connection to one of them. The parent serves
nothing. It forwards SIGTERM/SIGINT to the children as one SIGTERM each and exits 0 when all
of them exited 0. A child that ends without being asked is logged in one line, the others are
stopped and the parent exits 1: there is no restart loop, the process manager restarts the
whole group.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from hypercorn.config import Config, Sockets

from actors.provider import Provider
from chat.settings import Settings

# Makes each worker's model provider in the worker (a picklable callable: the benchmarks' paced
# one); `None`, the configured provider.
ProviderFactory = Callable[[], Provider] | None

log = logging.getLogger(__name__)

# Past Hypercorn's graceful_timeout a child still has its pool and Redis client to close (a few
# seconds each at most); a child still running this long after that is killed.
STOP_MARGIN_S = 10.0
# SIGKILL cannot be refused: this long is only for the kernel to reap.
KILL_WAIT_S = 5.0


def worker_settings(settings: Settings, index: int) -> Settings:
    """A worker's own settings: with `METRICS_BIND=host:port` worker `index` (0, 1, …) serves
    its metrics on port + index, since each worker counts its own (scrape them all)."""
    if not settings.metrics_bind:
        return settings
    host, _, port = settings.metrics_bind.rpartition(":")
    return settings.model_copy(update={"metrics_bind": f"{host}:{int(port) + index}"})


def run_worker(
    settings: Settings, config: Config, sockets: Sockets, make_provider: ProviderFactory = None
) -> None:
    """One child: an instance serving on the parent's sockets until SIGTERM (spawn target)."""
    import anyio

    from chat.cli import configure_logging
    from chat.root import serve

    # Out of the terminal's process group: a Ctrl-C reaches the parent only, which passes it
    # on as one SIGTERM (a second signal after the first would meet the default handler).
    os.setpgrp()
    configure_logging(settings.log_level, settings.log_format)
    threading.Thread(target=_stop_when_orphaned, daemon=True, name="parent-watch").start()
    provider = make_provider() if make_provider is not None else None
    anyio.run(serve, settings, config, provider, sockets, backend_options={"use_uvloop": True})


def _stop_when_orphaned() -> None:
    """A parent that died without stopping this worker (kill -9): stop as on SIGTERM."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        log.error("the parent process %s has gone; stopping", parent.pid)
        os.kill(os.getpid(), signal.SIGTERM)


class Workers:
    """The parent's side: start, watch and stop the children."""

    def __init__(
        self,
        settings: Settings,
        config: Config,
        sockets: Sockets,
        count: int,
        make_provider: ProviderFactory = None,
    ) -> None:
        self.make_provider = make_provider
        self.settings = settings
        self.config = config
        self.sockets = sockets
        self.count = count
        self.processes: list[BaseProcess] = []
        self.signalled: set[int] = set()
        # Set when the stop begins: past it, children still running are killed.
        self.deadline: float | None = None
        # A signal wakes the wait below through this pipe (a retried wait keeps its timeout).
        self.wake_r, self.wake_w = os.pipe()

    def run(self) -> int:
        """Start the children and wait for them; the exit code for the whole group."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(self.wake_r)
            os.close(self.wake_w)

    def _run(self) -> int:
        context = multiprocessing.get_context("spawn")
        for index in range(self.count):
            if self.deadline is not None:
                break
            child = context.Process(
                target=run_worker,
                args=(
                    worker_settings(self.settings, index),
                    self.config,
                    self.sockets,
                    self.make_provider,
                ),
                name="parley-worker",
            )
            child.start()
            self.processes.append(child)
        if self.deadline is not None:
            self._stop_all()  # those started after the signal
        else:
            pids = ", ".join(str(p.pid) for p in self.processes)
            log.info("started %d workers (pids %s)", len(self.processes), pids)
        failed = False
        running = list(self.processes)
        while running:
            timeout = None if self.deadline is None else max(0, self.deadline - time.monotonic())
            ready = wait([self.wake_r, *(p.sentinel for p in running)], timeout=timeout)
            if self.wake_r in ready:
                os.read(self.wake_r, 64)
            if not ready:
                failed = True
                for process in running:
                    log.error("worker %s did not stop in time; killing it", process.pid)
                    _signal(process, signal.SIGKILL)
                self.deadline = time.monotonic() + KILL_WAIT_S
            for process in [p for p in running if p.sentinel in ready]:
                process.join()
                running.remove(process)
                if self.deadline is None:
                    failed = True
                    log.error("worker %s %s; stopping the others", process.pid, _ending(process))
                    self._stop_all()
                elif process.exitcode != 0:
                    failed = True
                    log.error("worker %s %s while stopping", process.pid, _ending(process))
        return 1 if failed else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.deadline is None:
            log.info("received %s, stopping the workers", signal.Signals(signum).name)
        self._stop_all()
        os.write(self.wake_w, b"!")

    def _stop_all(self) -> None:
        """SIGTERM, once, to each child still running; the stop's deadline starts."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.config.graceful_timeout + STOP_MARGIN_S
        for process in self.processes:
            if process.pid is not None and process.pid not in self.signalled:
                self.signalled.add(process.pid)
                _signal(process, signal.SIGTERM)


def _signal(process: BaseProcess, signum: int) -> None:
    if process.pid is not None and process.exitcode is None:
        # It may have ended meanwhile; its sentinel will say so.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def _ending(process: BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        return f"was ended by {signal.Signals(-code).name}"
    return f"exited with code {code}" if code else "exited without being asked to"


def serve_workers(
    settings: Settings,
    config: Config,
    sockets: Sockets,
    count: int,
    make_provider: ProviderFactory = None,
) -> int:
    """Run `count` worker processes on `sockets` until they stop; the group's exit code."""
    try:
        return Workers(settings, config, sockets, count, make_provider).run()
    finally:
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.close()
