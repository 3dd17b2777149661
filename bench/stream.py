"""Benchmark SSE streaming (route 7) and actor memory on one server instance.

Streaming mode (default): make a fresh PostgreSQL database (`--database postgresql`, the
default; dropped at the end) or a SQLite file in a temp dir (`--database sqlite`), migrate it,
start `bench/bench_server.py`
(`chat.root.serve` with a provider emitting tokens at a fixed rate, each carrying its emit
time), register and log in a user, then
- time the first `POST /messages` (`Prefer: respond-async`) on a cold actor whose conversation
  has `--history` messages, against the second on the same, now warm, actor;
- for each `--streams N`: open N concurrent streams on route 7, one per new conversation, and
  measure relay delay (provider emit → client read), TTFB, throughput, server RSS and CPU.

Idle mode (`--idle-actors N`): in fresh processes, spawn N actors over a migrated SQLite file
(one message each, answered at once) and report the memory of an idle actor, by RSS and by
tracemalloc, beside the size of its history.

    .venv/bin/python bench/stream.py --streams 10 100 500 1000 --out bench/results.md
    .venv/bin/python bench/stream.py --database sqlite --streams 100
    .venv/bin/python bench/stream.py --idle-actors 10000 --out bench/results.md

Every process started is stopped and the temp dirs removed, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import sqlalchemy as sa
import uvloop
from rest import (
    cpu_model,
    free_port,
    fresh_database,
    hypercorn_config,
    migrate,
    register_and_login,
    server_env,
    show_log,
    stop,
    wait_healthy,
)
from stream_helpers import (
    NS,
    InstantProvider,
    PeakRss,
    SseReader,
    StreamResult,
    machine_busy_s,
    percentile,
    process_cpu_s,
    rss_kib,
    seed_history,
    seed_user_conversations,
)

from actors.actor import ActorConfig
from actors.hub import Hub, HubLimits
from actors.provider import Turn
from actors.registry import Registry
from actors.store import DatabaseStore, Store
from storage.database import create_database, prepare
from storage.rows import as_uuid
from storage.tables import conversations

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
CONVERSATIONS = "/api/v1/chat/conversations"
STREAM_MESSAGE = "bench"
SETUP_PARALLEL = 16
BUSY_CPU_PCT = 90.0
TARGET_RELAY_P99_MS = 10.0
TARGET_RELAY_AT = 500
TARGET_ADDED_TTFB_MS = 10.0
TARGET_IDLE_KIB = 20.0
IDLE_WARMUP = 100
HISTORY_SAMPLE = 1000
RESULT_MARK = "IDLE_JSON "
BREAKDOWN_ROWS = 12
# Fixed for the benchmark; everything else is the service's default.
SERVER_SETTINGS = {
    "LOG_LEVEL": "WARNING",
    "PASSWORD_HASH_TIME_COST": "1",
    "PASSWORD_HASH_MEMORY_KIB": "64",
    "ACTOR_MAX_LIVE": "20000",
    "SUBSCRIBER_QUEUE_SIZE": "1000",
}


# --- command line and machine -------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="*", default=[10, 100, 500, 1000])
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds to spread starts over")
    parser.add_argument(
        "--workers", type=int, default=0, help="load generator processes (0: 1 below 500, else 2)"
    )
    parser.add_argument(
        "--database",
        choices=["postgresql", "sqlite"],
        default="postgresql",
        help="the server's database for the streaming and cold actor parts (idle mode: SQLite)",
    )
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server")
    parser.add_argument("--admin-db", default="test", help="database to connect to for CREATE")
    parser.add_argument("--cold-samples", type=int, default=5, help="0 skips the cold actor")
    parser.add_argument("--history", type=int, default=100, help="messages, cold actor test")
    parser.add_argument("--idle-actors", type=int, default=0, help="run the idle actor mode")
    parser.add_argument("--idle-history", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out", type=Path, help="append the markdown report to this file")
    parser.add_argument("--idle-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.rate <= 0 or args.ramp < 0 or args.workers < 0:
        parser.error("--tokens >= 1, --rate > 0, --ramp >= 0 and --workers >= 0")
    if any(n < 1 for n in args.streams) or args.idle_actors < 0:
        parser.error("--streams and --idle-actors must be >= 1")
    return args


def machine_lines() -> list[str]:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- machine: nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, "
        f"kernel {platform.release()}, python {platform.python_version()}",
        f"- command: `{shlex.join([sys.executable, *sys.argv])}`",
        f"- load average when the report was written: {load} "
        "(other work on the machine would skew CPU-bound figures)",
    ]


def settings_line(extra: dict[str, str]) -> str:
    values = {**SERVER_SETTINGS, **extra}
    listed = ", ".join(f"{k}={v}" for k, v in values.items())
    return f"- settings: {listed}, JWT_SECRET random (48 characters); all others default"


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    base_url: str
    token: str
    server_pid: int
    database_url: str


def sqlite_url(var_dir: Path) -> str:
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
    env: dict[str, str], tmp: Path, args: argparse.Namespace, log: Path
) -> Iterator[tuple[str, int]]:
    """Start `bench/bench_server.py`, wait for /healthz; yield (base URL, pid); stop on exit."""
    port = free_port()
    cmd = [sys.executable, str(BENCH / "bench_server.py"), "--bind", f"127.0.0.1:{port}"]
    cmd += ["--config", str(hypercorn_config(tmp))]
    cmd += ["--tokens", str(args.tokens), "--rate", str(args.rate)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, proc)
        yield base_url, proc.pid
    finally:
        stop(proc)


def create_conversations(ctx: Context, count: int) -> list[str]:
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


# --- cold actor ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdSample:
    cold_ms: float
    warm_ms: float


def post_async(client: httpx.Client, conversation_id: str) -> float:
    """Milliseconds until `POST /messages` with `Prefer: respond-async` answers 202."""
    started = time.perf_counter()
    response = client.post(
        f"{CONVERSATIONS}/{conversation_id}/messages",
        json={"message": "bench tokens=1"},
        headers={"Prefer": "respond-async"},
    )
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 202:
        raise RuntimeError(f"POST /messages answered {response.status_code}: {response.text}")
    return elapsed


def wait_total(client: httpx.Client, conversation_id: str, total: int) -> None:
    """Wait until the conversation has `total` messages (the reply is stored), then a bit."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = client.get(f"{CONVERSATIONS}/{conversation_id}/messages", params={"limit": 1})
        if response.json()["total"] >= total:
            time.sleep(0.05)  # the actor's title and counters follow the stored reply
            return
        time.sleep(0.02)
    raise RuntimeError(f"conversation {conversation_id} never reached {total} messages")


def cold_then_warm(client: httpx.Client, conversation_id: str, history: int) -> ColdSample:
    cold = post_async(client, conversation_id)
    wait_total(client, conversation_id, history + 2)
    warm = post_async(client, conversation_id)
    wait_total(client, conversation_id, history + 4)
    return ColdSample(cold, warm)


def cold_actor(ctx: Context, samples: int, history: int) -> dict[int, list[ColdSample]]:
    """Per history length (`history` and 0): cold/warm timings, the first sample dropped."""
    headers = {"Authorization": f"Bearer {ctx.token}"}
    found: dict[int, list[ColdSample]] = {}
    with httpx.Client(base_url=ctx.base_url, headers=headers, timeout=60) as client:
        for length in (history, 0):
            ids = create_conversations(ctx, samples + 1)
            seed_history(ctx.database_url, [uuid.UUID(i) for i in ids], length)
            runs = [cold_then_warm(client, i, length) for i in ids]
            found[length] = runs[1:]
    return found


# --- streams: the load generator ----------------------------------------------------------


@dataclass(frozen=True)
class Job:
    base_url: str
    token: str
    conversations: list[tuple[int, str]]  # (index among all streams, conversation id)
    total: int
    start_at_ns: int
    ramp_s: float
    interval_ns: int


@dataclass
class WorkerResult:
    streams: list[StreamResult]
    cpu_s: float


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_stream(
    client: httpx.AsyncClient, job: Job, index: int, conversation_id: str, result: StreamResult
) -> None:
    start_ns = job.start_at_ns + int(job.ramp_s * NS * index / job.total)
    await anyio.sleep(max(0.0, (start_ns - time.time_ns()) / NS))
    reader = SseReader(result, job.interval_ns)
    result.start_ns = time.time_ns()
    url = f"{CONVERSATIONS}/{conversation_id}/stream"
    try:
        async with client.stream("GET", url, params={"message": STREAM_MESSAGE}) as response:
            if response.status_code != 200:
                body = await response.aread()
                result.error = f"HTTP {response.status_code}: {body[:200]!r}"
                return
            async for chunk in response.aiter_raw():
                reader.feed(chunk, time.time_ns())
    except httpx.HTTPError as error:
        result.error = f"{type(error).__name__}: {error}"


async def drive(job: Job) -> list[StreamResult]:
    count = len(job.conversations)
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    headers = {"Authorization": f"Bearer {job.token}"}
    timeout = httpx.Timeout(120, connect=30, pool=60)
    results = [StreamResult() for _ in job.conversations]
    client = httpx.AsyncClient(
        base_url=job.base_url, headers=headers, limits=limits, timeout=timeout, http2=False
    )
    async with client, anyio.create_task_group() as tg:
        for (index, conversation_id), result in zip(job.conversations, results, strict=True):
            tg.start_soon(one_stream, client, job, index, conversation_id, result)
    return results


def run_job(job: Job) -> WorkerResult:
    """One load generator process's share (also run in-process when there is one worker)."""
    before = own_cpu_s()
    streams = uvloop.run(drive(job))
    return WorkerResult(streams, own_cpu_s() - before)


def ready() -> int:
    return os.getpid()


def run_workers(jobs: list[Job], make: Any) -> list[WorkerResult]:
    if len(jobs) == 1:
        return [run_job(make(jobs[0]))]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        # Started and imported before the clock starts.
        pool.starmap(ready, [()] * len(jobs))
        return pool.map(run_job, [make(job) for job in jobs])


# --- streams: one run ---------------------------------------------------------------------


@dataclass
class StreamRun:
    streams: int
    workers: int
    results: list[StreamResult]
    wall_s: float
    server_cpu_pct: float
    loadgen_cpu_pct: float
    loadgen_max_worker_pct: float
    machine_cpu_pct: float
    rss_idle_kib: int
    rss_peak_kib: int
    server_cpu_peak_pct: float
    server_busy_s: int


def worker_count(args: argparse.Namespace, streams: int) -> int:
    return args.workers or (1 if streams < 500 else 2)


def jobs_for(ctx: Context, ids: list[str], workers: int, args: argparse.Namespace) -> list[Job]:
    indexed = list(enumerate(ids))
    return [
        Job(
            base_url=ctx.base_url,
            token=ctx.token,
            conversations=indexed[w::workers],
            total=len(ids),
            start_at_ns=0,
            ramp_s=args.ramp,
            interval_ns=round(NS / args.rate),
        )
        for w in range(workers)
    ]


def run_streams(ctx: Context, streams: int, args: argparse.Namespace) -> StreamRun:
    ids = create_conversations(ctx, streams)
    time.sleep(1.0)  # let the server settle before its idle RSS is read
    workers = worker_count(args, streams)
    jobs = jobs_for(ctx, ids, workers, args)
    rss_idle = rss_kib(ctx.server_pid)
    marks: dict[str, float] = {}

    def make(job: Job) -> Job:
        if not marks:
            marks["start_ns"] = time.time_ns() + 0.3 * NS
            marks["server_cpu"] = process_cpu_s(ctx.server_pid)
            marks["machine_cpu"] = machine_busy_s()
        return replace(job, start_at_ns=int(marks["start_ns"]))

    with PeakRss(ctx.server_pid, busy_pct=BUSY_CPU_PCT) as peak:
        done = run_workers(jobs, make)
    wall = (time.time_ns() - marks["start_ns"]) / NS
    server_cpu = (process_cpu_s(ctx.server_pid) - marks["server_cpu"]) / wall * 100
    machine_cpu = (machine_busy_s() - marks["machine_cpu"]) / wall * 100
    per_worker = [w.cpu_s / wall * 100 for w in done]
    results = [s for w in done for s in w.streams]
    run = StreamRun(
        streams=streams,
        workers=workers,
        results=results,
        wall_s=wall,
        server_cpu_pct=server_cpu,
        loadgen_cpu_pct=sum(per_worker),
        loadgen_max_worker_pct=max(per_worker),
        machine_cpu_pct=machine_cpu,
        rss_idle_kib=rss_idle,
        rss_peak_kib=peak.peak_kib,
        server_cpu_peak_pct=peak.peak_cpu_pct,
        server_busy_s=peak.busy_windows,
    )
    print(f"  {streams} streams: {failures(run, args.tokens)} failed", file=sys.stderr)
    return run


def failures(run: StreamRun, tokens: int) -> int:
    return sum(1 for r in run.results if r.error or not r.complete or r.tokens != tokens)


# --- streams: figures ---------------------------------------------------------------------


def ms(ns: float) -> float:
    return ns / 1e6


def spread(values: list[int]) -> tuple[float, float, float]:
    """p50, p99 and max in ms."""
    ordered = sorted(values)
    if not ordered:
        return 0.0, 0.0, 0.0
    return ms(percentile(ordered, 0.5)), ms(percentile(ordered, 0.99)), ms(ordered[-1])


def steady_rate(results: list[StreamResult]) -> float:
    """Tokens/s received while every stream was streaming (0 if that window is under 1 s)."""
    good = [r for r in results if r.tokens]
    if not good:
        return 0.0
    begin = max(r.first_chunk_ns for r in good)
    end = min(r.last_chunk_ns for r in good)
    if end - begin < NS:
        return 0.0
    count = sum(1 for r in good for t in r.received_ns if begin <= t <= end)
    return count / ((end - begin) / NS)


def overall_rate(results: list[StreamResult]) -> float:
    received = sum(r.tokens for r in results)
    starts = [r.start_ns for r in results if r.start_ns]
    ends = [r.last_chunk_ns for r in results if r.last_chunk_ns]
    if not starts or not ends:
        return 0.0
    return received / ((max(ends) - min(starts)) / NS)


@dataclass(frozen=True)
class Figures:
    received: int
    expected: int
    failed: int
    overall: float
    steady: float
    offered: float
    relay: tuple[float, float, float]
    lag: tuple[float, float, float]
    ttfb: tuple[float, float, float]
    added: tuple[float, float, float]


def figures(run: StreamRun, args: argparse.Namespace) -> Figures:
    got = [r for r in run.results if r.tokens]
    return Figures(
        received=sum(r.tokens for r in run.results),
        expected=run.streams * args.tokens,
        failed=failures(run, args.tokens),
        overall=overall_rate(run.results),
        steady=steady_rate(run.results),
        offered=run.streams * args.rate,
        relay=spread([d for r in run.results for d in r.delays_ns]),
        lag=spread([d for r in run.results for d in r.lags_ns]),
        ttfb=spread([r.first_chunk_ns - r.start_ns for r in got]),
        added=spread([r.first_chunk_ns - r.first_emit_ns for r in got]),
    )


# --- streams: report ----------------------------------------------------------------------


def latency_table(runs: list[StreamRun], args: argparse.Namespace) -> list[str]:
    lines = [
        "| streams | tokens received / expected | failed streams | tokens/s overall "
        "| tokens/s all streaming (offered) | relay p50 / p99 / max ms "
        "| provider lateness p99 / max ms | TTFB p50 / p99 ms | added TTFB p50 / p99 / max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        f = figures(run, args)
        steady = f"{f.steady:.0f}" if f.steady else "n/a"
        lines.append(
            f"| {run.streams} | {f.received} / {f.expected} | {f.failed} | {f.overall:.0f} "
            f"| {steady} ({f.offered:.0f}) "
            f"| {f.relay[0]:.2f} / {f.relay[1]:.2f} / {f.relay[2]:.1f} "
            f"| {f.lag[1]:.2f} / {f.lag[2]:.1f} | {f.ttfb[0]:.1f} / {f.ttfb[1]:.1f} "
            f"| {f.added[0]:.2f} / {f.added[1]:.2f} / {f.added[2]:.1f} |"
        )
    return lines


def bottleneck(run: StreamRun) -> str:
    found = []
    if run.server_cpu_pct >= BUSY_CPU_PCT:
        found.append("server CPU")
    elif run.server_busy_s >= 2:
        found.append(f"server CPU for {run.server_busy_s} s")
    if run.loadgen_max_worker_pct >= BUSY_CPU_PCT:
        found.append("load generator CPU")
    if run.machine_cpu_pct >= BUSY_CPU_PCT * len(os.sched_getaffinity(0)):
        found.append("all cores busy")
    return ", ".join(found) or "none"


def resource_table(runs: list[StreamRun]) -> list[str]:
    lines = [
        "| streams | load gen workers | server RSS idle MiB | server RSS peak MiB "
        "| per live stream KiB | server CPU % mean / peak (s ≥ 90 %) "
        "| load gen CPU % (busiest worker) "
        "| machine CPU % (rest) | bottleneck |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        per = (run.rss_peak_kib - run.rss_idle_kib) / run.streams
        rest = run.machine_cpu_pct - run.server_cpu_pct - run.loadgen_cpu_pct
        lines.append(
            f"| {run.streams} | {run.workers} | {run.rss_idle_kib / 1024:.1f} "
            f"| {run.rss_peak_kib / 1024:.1f} | {per:.1f} | {run.server_cpu_pct:.0f} / "
            f"{run.server_cpu_peak_pct:.0f} ({run.server_busy_s}) "
            f"| {run.loadgen_cpu_pct:.0f} ({run.loadgen_max_worker_pct:.0f}) "
            f"| {run.machine_cpu_pct:.0f} ({rest:.0f}) | {bottleneck(run)} |"
        )
    return lines


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**NOT met**")


def target_lines(runs: list[StreamRun], args: argparse.Namespace) -> list[str]:
    at = [r for r in runs if r.streams == TARGET_RELAY_AT]
    relay = figures(at[0], args).relay[1] if at else None
    added = [figures(r, args).added[1] for r in runs]
    worst = max(added) if added else None
    relay_ok = None if relay is None else relay < TARGET_RELAY_P99_MS
    added_ok = None if worst is None else worst < TARGET_ADDED_TTFB_MS
    shown = "" if relay is None else f" ({relay:.2f} ms)"
    shown_added = "" if worst is None else f" (worst p99 {worst:.2f} ms)"
    return [
        f"- target p99 relay delay < {TARGET_RELAY_P99_MS:.0f} ms at {TARGET_RELAY_AT} "
        f"streams: {verdict(relay_ok)}{shown}",
        f"- target added TTFB < {TARGET_ADDED_TTFB_MS:.0f} ms (p99, every N): "
        f"{verdict(added_ok)}{shown_added}",
    ]


def failure_lines(runs: list[StreamRun], tokens: int) -> list[str]:
    lines = []
    for run in runs:
        bad = [r for r in run.results if r.error or not r.complete or r.tokens != tokens]
        for r in bad[:5]:
            why = r.error or ("no complete event" if not r.complete else "")
            lines.append(f"- {run.streams} streams: {r.tokens}/{tokens} tokens, {why}")
        if len(bad) > 5:
            lines.append(f"- {run.streams} streams: … and {len(bad) - 5} more failed")
    return ["", "**Failed streams:**", *lines] if lines else []


def cold_table(cold: dict[int, list[ColdSample]]) -> list[str]:
    lines = [
        "| history messages | samples | 1st POST, cold actor: median / min ms "
        "| 2nd POST, warm actor: median / min ms | cold − warm, median ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for history, samples in cold.items():
        if not samples:
            continue
        colds = [s.cold_ms for s in samples]
        warms = [s.warm_ms for s in samples]
        diff = statistics.median(s.cold_ms - s.warm_ms for s in samples)
        lines.append(
            f"| {history} | {len(samples)} | {statistics.median(colds):.2f} / {min(colds):.2f} "
            f"| {statistics.median(warms):.2f} / {min(warms):.2f} | {diff:.2f} |"
        )
    return lines


def stream_report(
    runs: list[StreamRun], cold: dict[int, list[ColdSample]], args: argparse.Namespace
) -> str:
    lines = [f"## Streaming benchmark (route 7), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", ""]
    lines += machine_lines()
    lines += [
        "- server: `bench/bench_server.py`, i.e. `chat.root.serve` (one Hypercorn process, "
        "uvloop, hypercorn.toml without the access log) with the benchmark provider; "
        f"{database_line(args)}",
        settings_line({"ACTOR_HISTORY_MESSAGES": str(args.history)}),
        f"- provider: {args.tokens} tokens per reply at {args.rate:g} tokens/s, the first at "
        "once; each token carries its emit time",
        f"- load generator: httpx AsyncClient (HTTP/1.1, a connection per stream) on uvloop; "
        f"stream starts spread evenly over {args.ramp:g} s; one new conversation per stream",
        "- relay delay: provider emit → client read of the chunk event; provider lateness: "
        "emit time behind the provider's schedule (server event loop lag); TTFB: request "
        "start → first chunk read; added TTFB: first token's emit → its read",
        "- per live stream: (peak − idle server RSS) / streams; includes the hub's retained "
        "events of the reply; CPU as % of one core over the run (server peak: its busiest "
        f"1 s window, and how many 1 s windows were at ≥ {BUSY_CPU_PCT:.0f} %); machine CPU: every "
        "process on all cores (/proc/stat), rest: machine minus server and load generator "
        "(the database, the benchmark's parent process, the kernel)",
        "",
    ]
    if runs:
        lines += ["### Streams", "", *latency_table(runs, args), "", *resource_table(runs)]
        lines += ["", *target_lines(runs, args), *failure_lines(runs, args.tokens), ""]
    if cold:
        lines += [
            "### Cold actor",
            "",
            "`POST /messages` with `Prefer: respond-async` (202 once the actor has loaded "
            "its history and stored the message; 1-token reply awaited between the two); "
            "history seeded directly in the database (seq 1..N, `total_messages` set), "
            "first sample of each kind dropped.",
            "",
            *cold_table(cold),
            "",
        ]
    return "\n".join(lines)


def database_line(args: argparse.Namespace) -> str:
    if args.database == "sqlite":
        return "SQLite (WAL) in a temp dir"
    return (
        f"PostgreSQL at {args.pg.rsplit('@', 1)[-1]}, a fresh database per run "
        "(migrated, dropped at the end) on the same machine and cores"
    )


def stream_mode(args: argparse.Namespace) -> str:
    extra = {"ACTOR_HISTORY_MESSAGES": str(args.history)}
    with (
        tempfile.TemporaryDirectory(prefix="parley-stream-") as name,
        bench_database(args, Path(name) / "var") as database_url,
    ):
        tmp = Path(name)
        env = bench_env(tmp / "var", extra, database_url)
        migrate(env)
        log = tmp / "server.log"
        try:
            with running_bench_server(env, tmp, args, log) as (base_url, pid):
                _, token = register_and_login(base_url)
                ctx = Context(base_url, token, pid, database_url)
                cold = cold_actor(ctx, args.cold_samples, args.history) if args.cold_samples else {}
                runs = [run_streams(ctx, n, args) for n in args.streams]
        except BaseException:
            show_log(log, everything=True)
            raise
        show_log(log, everything=False)
    return stream_report(runs, cold, args)


# --- idle actors: the measuring process ---------------------------------------------------


async def post_all(registry: Registry, user_id: uuid.UUID, ids: list[uuid.UUID]) -> None:
    """One message to each conversation, a few at a time; returns when all are answered."""
    send, receive = anyio.create_memory_object_stream[uuid.UUID](len(ids))
    for conversation_id in ids:
        send.send_nowait(conversation_id)
    send.close()

    async def poster() -> None:
        async for conversation_id in receive:
            command = await registry.post_message(user_id, conversation_id, "bench")
            await command.finished.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(SETUP_PARALLEL):
            tg.start_soon(poster)


async def history_bytes(store: Store, ids: list[uuid.UUID], limit: int) -> float:
    """tracemalloc size of an actor's Turn list, rebuilt the way the actor loads it."""
    await store.load_history(ids[0], limit)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    kept = []
    for conversation_id in ids:
        recent = await store.load_history(conversation_id, limit)
        kept.append([Turn(m.role, m.content) for m in recent])
        del recent
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - before
    return size / len(kept)


def file_group(filename: str) -> str:
    path = Path(filename)
    if "site-packages" in path.parts:
        return path.parts[path.parts.index("site-packages") + 1]
    if path.is_relative_to(ROOT):
        return str(path.relative_to(ROOT))
    return f"stdlib {path.parent.name}/{path.name}" if path.parent.name else path.name


def by_file(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int) -> list[Any]:
    groups: dict[str, int] = {}
    for stat in after.compare_to(before, "filename"):
        name = file_group(stat.traceback[0].filename)
        groups[name] = groups.get(name, 0) + stat.size_diff
    ranked = sorted(groups.items(), key=lambda kv: -kv[1])
    return [[name, size / n] for name, size in ranked[:BREAKDOWN_ROWS]]


async def spawn_and_measure(
    registry: Registry, hub: Hub, user_id: uuid.UUID, ids: list[uuid.UUID], trace: bool
) -> dict[str, Any]:
    warm, measured = ids[:IDLE_WARMUP], ids[IDLE_WARMUP:]
    await post_all(registry, user_id, warm)
    await anyio.sleep(0.5)
    gc.collect()
    rss0, hub0 = rss_kib(), hub.retained_bytes
    if trace:
        tracemalloc.start()
        snap0 = tracemalloc.take_snapshot()
    started = time.monotonic()
    await post_all(registry, user_id, measured)
    spawn_s = time.monotonic() - started
    await anyio.sleep(0.5)  # every actor back to waiting on its mailbox
    gc.collect()
    n = len(measured)
    found: dict[str, Any] = {
        "actors": n,
        "live": registry.live,
        "spawn_s": spawn_s,
        "rss_per_actor": (rss_kib() - rss0) * 1024 / n,
        "hub_data_per_actor": (hub.retained_bytes - hub0) / n,
    }
    if trace:
        found["traced_per_actor"] = tracemalloc.get_traced_memory()[0] / n
        found["by_file"] = by_file(snap0, tracemalloc.take_snapshot(), n)
        sample = measured[:HISTORY_SAMPLE]
        limit = registry.config.history_messages
        found["history"] = await history_bytes(registry.store, sample, limit)
    return found


async def idle_worker(spec: dict[str, Any]) -> dict[str, Any]:
    db = create_database(spec["database"])
    await db.connect()
    try:
        await prepare(db)
        query = sa.select(conversations.c.id).order_by(conversations.c.created_at)
        ids = [as_uuid(row["id"]) for row in await db.fetch_all(query)]
        config = ActorConfig(idle_s=1e9, max_live=len(ids) + 1)
        hub = Hub(HubLimits())
        async with anyio.create_task_group() as tg:
            registry = Registry(
                store=DatabaseStore(db),
                provider=InstantProvider(),
                hub=hub,
                config=config,
                task_group=tg,
            )
            found = await spawn_and_measure(
                registry, hub, uuid.UUID(spec["user_id"]), ids, spec["trace"]
            )
            await registry.drain()
            tg.cancel_scope.cancel()
    finally:
        await db.disconnect()
    return found


def idle_worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    found = anyio.run(idle_worker, spec, backend_options={"use_uvloop": True})
    print(RESULT_MARK + json.dumps(found))
    return 0


# --- idle actors: the parent --------------------------------------------------------------


def idle_run(count: int, history: int, trace: bool) -> dict[str, Any]:
    """Seed a fresh database, then measure in a fresh process; its figures."""
    with tempfile.TemporaryDirectory(prefix="parley-idle-") as name:
        var = Path(name) / "var"
        env = bench_env(var, {})
        migrate(env)
        database_url = sqlite_url(var)
        user_id = seed_user_conversations(database_url, count + IDLE_WARMUP, history)
        spec = {"database": database_url, "user_id": str(user_id), "trace": trace}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--idle-worker", json.dumps(spec)]
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the idle worker failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT_MARK))
    return dict(json.loads(line.removeprefix(RESULT_MARK)))


def idle_table(rows: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> list[str]:
    lines = [
        "| history messages (+ the bench question and reply) | actors | spawn s "
        "| RSS per actor B | tracemalloc per actor B | history Turn list B "
        "| beyond history B (tracemalloc) | of which hub replay log B | "
        f"beyond history and hub B | target < {TARGET_IDLE_KIB:.0f} KiB beyond history |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for history, rss, traced in rows:
        beyond = traced["traced_per_actor"] - traced["history"]
        hub = sum(size for name, size in traced["by_file"] if name in HUB_FILES)
        ok = max(beyond, rss["rss_per_actor"] - traced["history"]) < TARGET_IDLE_KIB * 1024
        lines.append(
            f"| {history} | {rss['actors']} | {rss['spawn_s']:.1f} "
            f"| {rss['rss_per_actor']:.0f} | {traced['traced_per_actor']:.0f} "
            f"| {traced['history']:.0f} | {beyond:.0f} | {hub:.0f} | {beyond - hub:.0f} "
            f"| {verdict(ok)} |"
        )
    return lines


HUB_FILES = ("actors/hub.py", "actors/events.py")


def breakdown_table(rows: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> list[str]:
    lines = [
        "| history messages | where allocated (tracemalloc, by file) | bytes per actor |",
        "|---:|---|---:|",
    ]
    for history, _, traced in rows:
        for name, size in traced["by_file"]:
            lines.append(f"| {history} | `{name}` | {size:.0f} |")
    return lines


def idle_report(rows: list[tuple[int, dict[str, Any], dict[str, Any]]], count: int) -> str:
    lines = [f"## Idle actors, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", ""]
    lines += machine_lines()
    lines += [
        f"- in-process: `actors.registry.Registry` over `DatabaseStore` (SQLite, migrated, "
        f"seeded directly), {count} actors after {IDLE_WARMUP} warm-up ones, one message "
        "each answered at once with one token, then idle (idle timeout 1e9 s); "
        "ActorConfig and HubLimits defaults otherwise (history limit 50)",
        "- RSS: VmRSS delta / actors in a process without tracemalloc; tracemalloc: traced "
        "Python heap / actors in a second fresh process; history: tracemalloc of the Turn "
        f"lists rebuilt from the database for {HISTORY_SAMPLE} of the conversations",
        "- the hub keeps each conversation's events (message, chunk, complete, "
        "conversation_updated) for replay for EVENTS_RETAINED_S (10 min by default): "
        "shown apart as the hub replay log",
        "",
        *idle_table(rows),
        "",
        *breakdown_table(rows),
        "",
    ]
    return "\n".join(lines)


def idle_mode(args: argparse.Namespace) -> str:
    rows = []
    for history in args.idle_history:
        print(f"  idle actors, history {history}: RSS run", file=sys.stderr)
        rss = idle_run(args.idle_actors, history, trace=False)
        print(f"  idle actors, history {history}: tracemalloc run", file=sys.stderr)
        traced = idle_run(args.idle_actors, history, trace=True)
        rows.append((history, rss, traced))
    return idle_report(rows, args.idle_actors)


# --- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.idle_worker:
        return idle_worker_main(args.idle_worker)
    raise_open_files()
    text = idle_mode(args) if args.idle_actors else stream_mode(args)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
