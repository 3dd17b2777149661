"""The server side of `bench/stream.py`: its settings, its database, starting
`bench/bench_server.py`, and creating conversations through the API."""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
from rest import free_port, fresh_database, hypercorn_config, server_env, stop, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
CONVERSATIONS = "/api/v1/chat/conversations"
SETUP_PARALLEL = 16
# Fixed for the benchmark; everything else is the service's default.
SERVER_SETTINGS = {
    "LOG_LEVEL": "WARNING",
    "PASSWORD_HASH_TIME_COST": "1",
    "PASSWORD_HASH_MEMORY_KIB": "64",
    "ACTOR_MAX_LIVE": "20000",
    "SUBSCRIBER_QUEUE_SIZE": "1000",
}


@dataclass(frozen=True)
class Context:
    """A running benchmark server and the signed-in user's token."""

    base_url: str
    token: str
    server_pid: int
    database_url: str


def raise_open_files() -> None:
    """Lift the soft open-files limit to the hard one (a socket per stream)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def sqlite_url(var_dir: Path) -> str:
    """The URL of the SQLite file the benchmark keeps under `var_dir`."""
    return f"sqlite:///{var_dir / 'parley.db'}"


@contextmanager
def bench_database(args: argparse.Namespace, var_dir: Path) -> Iterator[str]:
    """The streaming part's database URL: a fresh PostgreSQL database, dropped on exit
    (as `bench/rest.py` makes it), or a SQLite file under `var_dir`."""
    if args.database == "sqlite":
        yield sqlite_url(var_dir)
        return
    with fresh_database(args.pg, args.admin_db) as url:
        yield url


def bench_env(var_dir: Path, extra: dict[str, str], database_url: str = "") -> dict[str, str]:
    """The server's environment: `database_url` (a SQLite file under `var_dir` if empty),
    the benchmark's settings."""
    var_dir.mkdir(parents=True, exist_ok=True)
    env = server_env(database_url or sqlite_url(var_dir), var_dir)
    env.update(SERVER_SETTINGS)
    env.update(extra)
    return env


@contextmanager
def running_bench_server(
    env: dict[str, str], tmp: Path, args: argparse.Namespace, log: Path, workers: int = 1
) -> Iterator[tuple[str, int]]:
    """Start `bench/bench_server.py`, wait for /healthz; yield (base URL, pid); stop on exit."""
    port = free_port()
    cmd = [sys.executable, str(BENCH / "bench_server.py"), "--bind", f"127.0.0.1:{port}"]
    cmd += ["--config", str(hypercorn_config(tmp))]
    cmd += ["--tokens", str(args.tokens), "--rate", str(args.rate), "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, proc)
        yield base_url, proc.pid
    finally:
        stop(proc)


def create_conversations(ctx: Context, count: int) -> list[str]:
    """Create `count` conversations through the API, a few at a time; their ids."""

    async def create(client: httpx.AsyncClient, limiter: anyio.Semaphore, out: list[str]) -> None:
        async with limiter:
            response = await client.post(CONVERSATIONS, json={"title": "bench"})
        response.raise_for_status()
        out.append(response.json()["id"])

    async def main() -> list[str]:
        ids: list[str] = []
        limiter = anyio.Semaphore(SETUP_PARALLEL)
        headers = {"Authorization": f"Bearer {ctx.token}"}
        async with (
            httpx.AsyncClient(base_url=ctx.base_url, headers=headers, timeout=60) as client,
            anyio.create_task_group() as tg,
        ):
            for _ in range(count):
                tg.start_soon(create, client, limiter, ids)
        return ids

    return asyncio.run(main())
