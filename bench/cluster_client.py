"""The load generator of `bench/cluster.py`: a lean SSE client (plain asyncio streams, h11 for
the HTTP framing, `SseReader` for the events, uvloop), one process per share of the streams.

Each stream subscribes on route 8 of the consumer instance, then, at its turn, posts one
message with `Prefer: respond-async` to the producer instance; it ends when the reply's
`complete` event arrives (route 8 itself never ends).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import h11
import uvloop
from stream_helpers import NS, SseReader, StreamResult

CONVERSATIONS = "/api/v1/chat/conversations"
READ_SIZE = 65536
CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Job:
    """One load generator process's streams and their schedule (absolute `time.time_ns()`)."""

    consumer_url: str
    producer_url: str
    token: str
    conversations: list[tuple[int, str]]  # (index among all streams, conversation id)
    total: int
    connect_at_ns: int = 0
    post_at_ns: int = 0
    connect_ramp_s: float = 1.0
    post_ramp_s: float = 1.0
    interval_ns: int = NS // 20
    deadline_s: float = 60.0


@dataclass
class Share:
    """What one process measured: its streams and its own CPU seconds."""

    streams: list[StreamResult] = field(default_factory=list)
    cpu_s: float = 0.0


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def sleep_until(at_ns: int) -> None:
    await asyncio.sleep(max(0.0, (at_ns - time.time_ns()) / NS))


def request_bytes(
    conn: h11.Connection, method: str, url: str, path: str, token: str, body: bytes = b""
) -> bytes:
    host = urlsplit(url).netloc
    headers = [("Host", host), ("Authorization", f"Bearer {token}")]
    if body:
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        headers += [("Prefer", "respond-async")]
    out = conn.send(h11.Request(method=method, target=path, headers=headers)) or b""
    if body:
        out += conn.send(h11.Data(data=body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


async def open_stream(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)


async def post_message(job: Job, conversation_id: str) -> None:
    """POST the message to the producer over its own short-lived connection; raise on non-202."""
    reader, writer = await open_stream(job.producer_url)
    try:
        conn = h11.Connection(h11.CLIENT)
        path = f"{CONVERSATIONS}/{conversation_id}/messages"
        body = json.dumps({"message": "bench"}).encode()
        writer.write(request_bytes(conn, "POST", job.producer_url, path, job.token, body))
        status, answer = 0, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                if event.status_code == 202:
                    return
                status = event.status_code
            elif isinstance(event, h11.Data):
                answer += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                # The error body says which refusal it was (the `code` and `detail`).
                said = answer[:200].decode(errors="replace")
                raise RuntimeError(f"POST answered {status}: {said}")
            elif isinstance(event, h11.ConnectionClosed):
                raise RuntimeError("POST: connection closed")
    finally:
        writer.close()


async def one_stream(job: Job, index: int, conversation_id: str, result: StreamResult) -> None:
    await sleep_until(job.connect_at_ns + int(job.connect_ramp_s * NS * index / job.total))
    reader, writer = await open_stream(job.consumer_url)
    conn = h11.Connection(h11.CLIENT)
    sse = SseReader(result, job.interval_ns)
    path = f"{CONVERSATIONS}/{conversation_id}/events"
    writer.write(request_bytes(conn, "GET", job.consumer_url, path, job.token))
    result.start_ns = time.time_ns()
    post: asyncio.Task[None] | None = None
    post_at = job.post_at_ns + int(job.post_ramp_s * NS * index / job.total)
    try:
        while not result.complete and not result.error:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                if event.status_code != 200:
                    result.error = f"HTTP {event.status_code}"
                    return
                # Subscribed (route 8 answers once `follow` is done): post at our turn.
                post = asyncio.create_task(post_at_turn(job, conversation_id, post_at, result))
            elif isinstance(event, h11.Data):
                sse.feed(bytes(event.data), time.time_ns())
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                result.error = result.error or "stream ended"
                return
    finally:
        writer.close()
        if post is not None:
            await post


async def post_at_turn(job: Job, conversation_id: str, at_ns: int, result: StreamResult) -> None:
    await sleep_until(at_ns)
    try:
        await post_message(job, conversation_id)
    except (OSError, RuntimeError, TimeoutError, h11.ProtocolError) as error:
        result.error = f"POST {type(error).__name__}: {error}"


async def guarded(job: Job, index: int, conversation_id: str, result: StreamResult) -> None:
    try:
        async with asyncio.timeout(job.deadline_s):
            await one_stream(job, index, conversation_id, result)
    except (OSError, RuntimeError, TimeoutError, h11.ProtocolError) as error:
        result.error = result.error or f"{type(error).__name__}: {error}"


async def drive(job: Job) -> list[StreamResult]:
    results = [StreamResult() for _ in job.conversations]
    async with asyncio.TaskGroup() as tg:
        for (index, conversation_id), result in zip(job.conversations, results, strict=True):
            tg.create_task(guarded(job, index, conversation_id, result))
    return results


def run_job(job: Job) -> Share:
    before = own_cpu_s()
    streams = uvloop.run(drive(job))
    return Share(streams, own_cpu_s() - before)


def ready() -> int:
    return 0


def run_shares(jobs: list[Job], schedule: Callable[[Job], Job]) -> list[Share]:
    """Run the jobs, one process each (in this process when there is one); `schedule` sets a
    job's times once every process is up and imported."""
    if len(jobs) == 1:
        return [run_job(schedule(jobs[0]))]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        pool.starmap(ready, [()] * len(jobs))
        return pool.map(run_job, [schedule(job) for job in jobs])


def split(job: Job, workers: int) -> list[Job]:
    """`job`'s streams dealt round-robin over `workers` jobs."""
    return [replace(job, conversations=job.conversations[w::workers]) for w in range(workers)]
