"""Benchmark the WebSocket `/ws/chat` (issue #7) on one server instance.

(a) Idle capacity: for each `--idle N`, a fresh server; N authenticated sockets opened from
`--idle-workers` client processes (users spread so that none has more than `--per-user`
sockets, the service's default cap), each answering one ping; server RSS per socket
((VmRSS after - before) / N) and handshakes per second. The same against a bare Hypercorn +
Quart echo app (`bench/ws_server.py --app bare`), the baseline of the same run.
`--profile N` adds a Parley run under tracemalloc: what the sockets hold, by file.

(b) Streaming: for each `--streams N`, N sockets each sending a message and reading a reply of
`--tokens` tokens at `--rate` tokens/s (one user and conversation each), relay delay measured
as `bench/stream.py` measures it; beside it the SSE run of `bench/stream.py` with the same
parameters, against a fresh server of the same build, in the same invocation.

    .venv/bin/python bench/ws.py --idle 1000 5000 10000 --streams 100 500 --ramp 5

Every process started is stopped and the temp dirs and database removed, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import resource
import signal
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from rest import free_port, show_log
from stream_helpers import NS, CpuMark, PeakRss, StreamResult, process_cpu_s, rss_kib
from stream_idle import by_file
from stream_live import run_streams, worker_count
from stream_report import BUSY_CPU_PCT, StreamRun, stream_run
from stream_server import Context, fresh_run, paced_server, raise_open_files
from websockets.asyncio.client import connect
from ws_client import IdleJob, IdleResult, StreamJob, idle_worker, stream_worker
from ws_report import IdleRun, report

WARM_UP_SOCKETS = 20
SETTLE_S = 2.0
PASSWORD = "bench-password-1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, nargs="*", default=[1000, 5000, 10000])
    parser.add_argument("--streams", type=int, nargs="*", default=[100, 500])
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to spread starts over")
    parser.add_argument("--workers", type=int, default=0, help="stream clients (0: as stream.py)")
    parser.add_argument("--idle-workers", type=int, default=2, help="idle client processes")
    parser.add_argument("--in-flight", type=int, default=64, help="handshakes per client at once")
    parser.add_argument("--per-user", type=int, default=10, help="WS_MAX_SOCKETS_PER_USER")
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare echo app")
    parser.add_argument("--profile", type=int, default=0, help="tracemalloc run at N sockets")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server")
    parser.add_argument("--admin-db", default="test", help="database to connect to for CREATE")
    parser.add_argument("--out", type=Path, help="append the markdown report to this file")
    args = parser.parse_args(argv)
    counts = [*args.idle, *args.streams, args.idle_workers, args.in_flight, args.per_user]
    if any(n < 1 for n in counts) or args.profile < 0 or args.tokens < 1 or args.rate <= 0:
        parser.error("counts, --tokens and --rate must be >= 1 (--profile >= 0)")
    return args


# --- servers and users ----------------------------------------------------------------------


def high_file_limit() -> None:
    """In the server's process before exec: as many open files as allowed (a socket each)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextmanager
def running(
    app: str, env: dict[str, str], tmp: Path, args: argparse.Namespace, trace: str = ""
) -> Iterator[tuple[int, int]]:
    """A fresh `bench/ws_server.py` (`app` is parley or bare); yield (port, pid), stop on exit."""
    port = free_port()
    log = tmp / f"server-{app}-{port}.log"
    extra = ("--app", app, "--trace", trace)
    with paced_server(
        "ws_server.py", tmp, args, log, *extra, env=env, port=port, preexec_fn=high_file_limit
    ) as (_, pid):
        yield port, pid
    show_log(log, everything=False)


def register_users(base_url: str, count: int) -> list[str]:
    """`count` users registered and signed in through the API; their access tokens."""

    async def one(client: httpx.AsyncClient, limiter: asyncio.Semaphore, i: int) -> str:
        credentials = {"email": f"ws-bench-{i}@parley.example", "password": PASSWORD}
        async with limiter:
            (await client.post("/auth/register", json=credentials)).raise_for_status()
            login = await client.post("/auth/login", json=credentials)
        login.raise_for_status()
        return str(login.json()["access_token"])

    async def main() -> list[str]:
        limiter = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            return list(await asyncio.gather(*(one(client, limiter, i) for i in range(count))))

    return asyncio.run(main())


def warm_up(url: str, tokens: list[str]) -> None:
    """A few sockets opened, pinged and closed, so first-use costs fall before the baseline."""

    async def one(token: str) -> None:
        async with connect(f"{url}?token={token}", open_timeout=30) as ws:
            await ws.send('{"type":"ping"}')
            async with asyncio.timeout(30):
                await ws.recv()

    async def main() -> None:
        await asyncio.gather(*(one(token) for token in tokens))

    asyncio.run(main())


# --- client processes -----------------------------------------------------------------------


@contextmanager
def processes(target: Callable[[Any, Connection], None], jobs: list[Any]) -> Iterator[list[Any]]:
    """One client process per job, each with a pipe to it; all ended on exit."""
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe() for _ in jobs]
    procs = [
        context.Process(target=target, args=(job, child), daemon=True)
        for job, (_, child) in zip(jobs, pipes, strict=True)
    ]
    for proc in procs:
        proc.start()
    try:
        yield [parent for parent, _ in pipes]
    finally:
        for proc in procs:
            proc.join(timeout=15)
            if proc.is_alive():
                proc.terminate()
                proc.join()


def receive(conn: Connection, timeout_s: float) -> Any:
    """A client's next message; a client silent for `timeout_s` is a failure."""
    if not conn.poll(timeout_s):
        raise TimeoutError(f"a client process said nothing for {timeout_s:.0f} s")
    return conn.recv()


def snapshot(pid: int, prefix: str, n: int) -> tracemalloc.Snapshot:
    """Ask the traced server for its n-th snapshot and load it."""
    os.kill(pid, signal.SIGUSR1)
    path = Path(f"{prefix}.{n}")
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the traced server wrote no snapshot")
        time.sleep(0.1)
    return tracemalloc.Snapshot.load(str(path))


def traced_by_file(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, sockets: int
) -> list[Any]:
    """The heap's growth per socket by file (largest first), then its growth in all files."""
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return [*by_file(before, after, max(1, sockets)), ["(all files)", total / max(1, sockets)]]


# --- (a) idle capacity ----------------------------------------------------------------------


def idle_run(
    app: str, n: int, tokens: list[str], env: dict[str, str], tmp: Path, args: argparse.Namespace
) -> IdleRun:
    """N idle sockets against a fresh server of `app`; with `traced`, by tracemalloc."""
    traced = app.endswith("-traced")
    prefix = str(tmp / f"trace-{app}-{n}") if traced else ""
    users = math.ceil(n / args.per_user)
    with running(app.removesuffix("-traced"), env, tmp, args, prefix) as (port, pid):
        url = f"ws://127.0.0.1:{port}/ws/chat"
        warm_up(url, tokens[:WARM_UP_SOCKETS])
        time.sleep(SETTLE_S)
        first = snapshot(pid, prefix, 1) if traced else None
        before = rss_kib(pid)
        workers = args.idle_workers
        jobs = [
            IdleJob(url, [tokens[k % users] for k in range(w, n, workers)], args.in_flight)
            for w in range(workers)
        ]
        with processes(idle_worker, jobs) as conns:
            for conn in conns:
                receive(conn, 60)
            start_at = time.time_ns() + int(0.3 * NS)
            server_cpu = process_cpu_s(pid)
            for conn in conns:
                conn.send(start_at)
            results: list[IdleResult] = [receive(conn, 240) for conn in conns]
            server_cpu = process_cpu_s(pid) - server_cpu
            time.sleep(SETTLE_S)
            after = rss_kib(pid)
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            opened = sum(r.opened for r in results)
            breakdown = traced_by_file(first, snapshot(pid, prefix, 2), opened) if first else []
            for conn in conns:
                conn.send("release")
    run = IdleRun(app, n, users, results, before, after, server_cpu, fds, breakdown)
    print(f"  {app} {n} idle: {run.per_socket_b / 1024:.1f} KiB/socket", file=sys.stderr)
    return run


# --- (b) streaming --------------------------------------------------------------------------


def ws_streams(
    n: int, tokens: list[str], env: dict[str, str], tmp: Path, args: argparse.Namespace
) -> StreamRun:
    """N sockets, one user and conversation each, each sending a message and reading the reply."""
    workers = worker_count(args, n)
    with running("parley", env, tmp, args) as (port, pid):
        indexed = list(enumerate(tokens[:n]))
        url = f"ws://127.0.0.1:{port}/ws/chat"
        jobs = [
            StreamJob(
                url,
                indexed[w::workers],
                n,
                args.ramp,
                round(NS / args.rate),
                args.tokens,
                args.rate,
                args.in_flight,
            )
            for w in range(workers)
        ]
        with processes(stream_worker, jobs) as conns:
            ready = [receive(conn, 180) for conn in conns]
            failed = [StreamResult(error=e) for _, errors in ready for e in errors]
            time.sleep(1.0)  # let the server settle before its idle RSS is read
            rss_idle = rss_kib(pid)
            start = CpuMark.read(pid, time.time_ns() + int(0.3 * NS))
            with PeakRss(pid, busy_pct=BUSY_CPU_PCT) as peak:
                for conn in conns:
                    conn.send(start.start_ns)
                done = [receive(conn, args.ramp + args.tokens / args.rate + 120) for conn in conns]
            span = start.span()
    results = [r for streamed, _ in done for r in streamed] + failed
    run = stream_run(n, workers, results, span, [cpu for _, cpu in done], rss_idle, peak)
    print(f"  ws {n} streams done", file=sys.stderr)
    return run


def sse_streams(
    n: int, token: str, env: dict[str, str], tmp: Path, args: argparse.Namespace, database: str
) -> StreamRun:
    """`bench/stream.py`'s SSE streams with the same parameters, on a fresh server."""
    with running("parley", env, tmp, args) as (port, pid):
        ctx = Context(f"http://127.0.0.1:{port}", token, pid, database)
        return run_streams(ctx, n, args)


# --- the whole run --------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> str:
    """Every configuration the command line asks for; the markdown report."""
    extra = {"WS_MAX_SOCKETS_PER_USER": str(args.per_user)}
    with fresh_run(args, "parley-ws-", extra) as (tmp, env, database_url):
        needed = max(
            [math.ceil(n / args.per_user) for n in [*args.idle, args.profile]] + args.streams + [20]
        )
        with running("parley", env, tmp, args) as (port, _):
            tokens = register_users(f"http://127.0.0.1:{port}", needed)
        print(f"  {needed} users registered", file=sys.stderr)
        apps = ["parley"] + ([] if args.no_baseline else ["bare"])
        idle = [idle_run(app, n, tokens, env, tmp, args) for n in args.idle for app in apps]
        if args.profile:
            idle += [
                idle_run(f"{app}-traced", args.profile, tokens, env, tmp, args) for app in apps
            ]
        streams = [
            (
                sse_streams(n, tokens[0], env, tmp, args, database_url),
                ws_streams(n, tokens, env, tmp, args),
            )
            for n in args.streams
        ]
    return report(args, extra, idle, streams)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the report (and append it to `--out`)."""
    args = parse_args(argv)
    raise_open_files()
    text = bench(args)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
