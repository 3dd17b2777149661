"""The streaming part of `bench/stream.py`: N concurrent SSE streams on route 7 from a
paced provider, one per new conversation, spread over load generator processes; and the
mode that runs them (after the cold actor part) against a fresh server and database."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import anyio
import httpx
import uvloop
from rest import show_log
from stream_cold import cold_actor
from stream_helpers import NS, CpuMark, PeakRss, SseReader, StreamResult, rss_kib
from stream_report import BUSY_CPU_PCT, StreamRun, failures, stream_report, stream_run
from stream_server import (
    CONVERSATIONS,
    Context,
    create_conversations,
    fresh_run,
    signed_in,
)

STREAM_MESSAGE = "bench"


# --- the load generator -------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One load generator process's streams and when to start them."""

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


def run_workers(jobs: list[Job], make: Callable[[Job], Job]) -> list[WorkerResult]:
    """Run the jobs, each in its own process unless there is one; `make` finalises a job
    (its start time) once every process is up."""
    if len(jobs) == 1:
        return [run_job(make(jobs[0]))]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        # Started and imported before the clock starts.
        pool.starmap(ready, [()] * len(jobs))
        return pool.map(run_job, [make(job) for job in jobs])


# --- one run ------------------------------------------------------------------------------


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
    """Open `streams` concurrent streams, one per new conversation; what they measured."""
    ids = create_conversations(ctx, streams)
    time.sleep(1.0)  # let the server settle before its idle RSS is read
    workers = worker_count(args, streams)
    jobs = jobs_for(ctx, ids, workers, args)
    rss_idle = rss_kib(ctx.server_pid)
    marks: list[CpuMark] = []

    def make(job: Job) -> Job:
        if not marks:
            marks.append(CpuMark.read(ctx.server_pid, time.time_ns() + int(0.3 * NS)))
        return replace(job, start_at_ns=marks[0].start_ns)

    with PeakRss(ctx.server_pid, busy_pct=BUSY_CPU_PCT) as peak:
        done = run_workers(jobs, make)
    span = marks[0].span()
    results = [s for w in done for s in w.streams]
    run = stream_run(streams, workers, results, span, [w.cpu_s for w in done], rss_idle, peak)
    print(f"  {streams} streams: {failures(run, args.tokens)} failed", file=sys.stderr)
    return run


def stream_mode(args: argparse.Namespace) -> str:
    """The streaming mode: cold actor, then each `--streams N`; the markdown report."""
    extra = {"ACTOR_HISTORY_MESSAGES": str(args.history)}
    with fresh_run(args, "parley-stream-", extra) as (tmp, env, database_url):
        log = tmp / "server.log"
        with signed_in(env, tmp, args, log, database_url) as ctx:
            cold = cold_actor(ctx, args.cold_samples, args.history) if args.cold_samples else {}
            runs = [run_streams(ctx, n, args) for n in args.streams]
        show_log(log, everything=False)
    return stream_report(runs, cold, args)
