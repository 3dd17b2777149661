"""The server side of `bench/stream.py` (and of `bench/ws.py` and `bench/cluster.py`): its
settings, its database, starting `bench/bench_server.py` and the other paced servers, and
creating conversations through the API."""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
from rest import (
    fresh_database,
    hypercorn_config,
    migrate,
    register_and_login,
    server_env,
    serving,
)

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
def migrated_env(
    args: argparse.Namespace, var_dir: Path, extra: dict[str, str]
) -> Iterator[tuple[dict[str, str], str]]:
    """The run's database (as `bench_database` makes it) migrated, and the servers' environment
    on it (`bench_env`; one JWT secret for every server started with it): (env, database URL)."""
    with bench_database(args, var_dir) as database_url:
        env = bench_env(var_dir, extra, database_url)
        migrate(env)
        yield env, database_url


@contextmanager
def fresh_run(
    args: argparse.Namespace, prefix: str, extra: dict[str, str]
) -> Iterator[tuple[Path, dict[str, str], str]]:
    """A temporary folder named with `prefix` and `migrated_env` in it: (folder, env, database
    URL); the database dropped and the folder removed on exit."""
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as name,
        migrated_env(args, Path(name) / "var", extra) as (env, database_url),
    ):
        yield Path(name), env, database_url


def paced_server(
    script: str,
    tmp: Path,
    args: argparse.Namespace,
    log: Path,
    *extra: str,
    port: int = 0,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    preexec_fn: Callable[[], None] | None = None,
) -> AbstractContextManager[tuple[str, int]]:
    """`bench/<script>`, a server whose replies run at the benchmark's pace (`--tokens`,
    `--rate`), with the run's Hypercorn config and `extra` arguments, on `port` (a free one
    unless given); as `serving` runs it: (base URL, pid), stopped on exit."""
    cmd = [sys.executable, str(BENCH / script), "--config", str(hypercorn_config(tmp))]
    cmd += ["--tokens", str(args.tokens), "--rate", str(args.rate), *extra]
    return serving(cmd, log, port=port, env=env, cwd=cwd, preexec_fn=preexec_fn)


def running_bench_server(
    env: dict[str, str], tmp: Path, args: argparse.Namespace, log: Path, workers: int = 1
) -> AbstractContextManager[tuple[str, int]]:
    """Start `bench/bench_server.py`, wait for /healthz; yield (base URL, pid); stop on exit."""
    return paced_server("bench_server.py", tmp, args, log, "--workers", str(workers), env=env)


@contextmanager
def signed_in(
    env: dict[str, str], tmp: Path, args: argparse.Namespace, log: Path, database_url: str
) -> Iterator[Context]:
    """`running_bench_server` with the benchmark's user registered and signed in (all of the
    server's log is shown when anything fails: `rest.serving`)."""
    with running_bench_server(env, tmp, args, log) as (base_url, pid):
        _, token = register_and_login(base_url)
        yield Context(base_url, token, pid, database_url)


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
