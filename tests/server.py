"""A real `parley serve` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
# A start imports the whole service (quart, pydantic, the MCP SDK…): seconds of CPU, more on
# a loaded machine, twice over for `--workers 2`.
STARTUP_DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parley(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a `parley` command the way the README's first command does."""
    return subprocess.run(
        [sys.executable, "-m", "chat.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def server_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PARLEY_VAR_DIR": str(tmp_path / "var"),
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "64",
        **{k.upper(): v for k, v in settings.items()},
    }


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, as a process manager would, and the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log_text()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            # Not listening yet: the connect attempt itself is the wait.
            time.sleep(0.05)
    raise RuntimeError(f"server not ready in {STARTUP_DEADLINE_S}s:\n{server.log_text()}")


@contextmanager
def running_server(
    env: dict[str, str], log: Path, port: int | None = None, args: tuple[str, ...] = ()
) -> Iterator[Server]:
    port = port or free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "chat.cli", "serve", "--bind", f"127.0.0.1:{port}", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@contextmanager
def running_pair(env: dict[str, str], logs: Path) -> Iterator[tuple[Server, Server]]:
    """Two instances of one cluster (the same settings); on the way out both must stop
    cleanly, with no traceback in their logs."""
    with running_server(env, logs / "a.log") as a, running_server(env, logs / "b.log") as b:
        yield a, b
        assert a.stop() == 0 and b.stop() == 0
    assert "Traceback" not in a.log_text() + b.log_text()
