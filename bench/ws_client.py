"""The load generator of `bench/ws.py`: processes of `websockets` asyncio clients on uvloop.

Each worker process talks to the parent over a pipe: it says "ready" once imported (and, for
streams, once its sockets are open with a conversation each), waits for the common start
time, does its share, sends its results back, and (idle) holds its sockets until released.
Every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import uvloop
from stream_helpers import NS, SseReader, StreamResult
from websockets.asyncio.client import ClientConnection, connect

T = TypeVar("T")
OPEN_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 30.0
HOLD_TIMEOUT_S = 300.0  # an idle worker releases its sockets by itself after this
STREAM_MESSAGE = "bench"


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def from_parent(conn: Connection, timeout_s: float) -> Any:
    """The parent's next message, waited for off the event loop; bounded."""
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, conn.poll, timeout_s):
        raise TimeoutError(f"no word from the parent within {timeout_s:.0f} s")
    return conn.recv()


async def bounded(limiter: asyncio.Semaphore, work: Awaitable[T]) -> T:
    async with limiter:
        return await work


async def open_socket(url: str, token: str) -> ClientConnection:
    # No client pings (the server's, every 20 s, are answered by the library): a light client.
    return await connect(
        f"{url}?token={token}",
        open_timeout=OPEN_TIMEOUT_S,
        ping_interval=None,
        close_timeout=1,
        max_queue=None,
        compression=None,
    )


# --- idle sockets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IdleJob:
    url: str
    tokens: list[str]  # one per socket
    in_flight: int


@dataclass
class IdleResult:
    opened: int = 0
    answered: int = 0
    errors: list[str] = field(default_factory=list)
    first_start_ns: int = 0
    last_open_ns: int = 0
    handshakes_ns: list[int] = field(default_factory=list)
    cpu_s: float = 0.0


async def hold_idle(job: IdleJob, conn: Connection) -> None:
    result = IdleResult()
    limiter = asyncio.Semaphore(job.in_flight)
    sockets: list[ClientConnection] = []
    start_at_ns = await from_parent(conn, 60)
    await asyncio.sleep(max(0.0, (start_at_ns - time.time_ns()) / NS))
    cpu = own_cpu_s()
    result.first_start_ns = time.time_ns()

    async def one(token: str) -> None:
        async with limiter:
            began = time.time_ns()
            try:
                ws = await open_socket(job.url, token)
            except Exception as error:  # every failure is counted and reported
                result.errors.append(f"{type(error).__name__}: {error}"[:200])
                return
            done = time.time_ns()
        result.handshakes_ns.append(done - began)
        result.last_open_ns = max(result.last_open_ns, done)
        sockets.append(ws)

    await asyncio.gather(*(one(token) for token in job.tokens))
    result.opened = len(sockets)
    result.cpu_s = own_cpu_s() - cpu

    async def ping(ws: ClientConnection) -> None:
        # Each socket answers once: a `pong` from Parley, the echo from the bare app.
        await ws.send('{"type":"ping"}')
        await ws.recv(decode=False)
        result.answered += 1

    try:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            await asyncio.gather(*(bounded(limiter, ping(ws)) for ws in sockets))
    except TimeoutError:
        result.errors.append(f"ping: {result.answered}/{len(sockets)} answered in time")
    conn.send(result)
    try:
        await from_parent(conn, HOLD_TIMEOUT_S)
    finally:
        for ws in sockets:
            ws.transport.abort()


def idle_worker(job: IdleJob, conn: Connection) -> None:
    """Process entry: open `job`'s sockets when told, report, hold them until released."""
    raise_open_files()
    conn.send("ready")
    uvloop.run(hold_idle(job, conn))


# --- streams --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamJob:
    url: str
    sockets: list[tuple[int, str]]  # (index among all streams, token), one user each
    total: int
    ramp_s: float
    interval_ns: int
    tokens: int
    rate: float
    in_flight: int


async def prepare(job: StreamJob, index: int, token: str) -> tuple[ClientConnection, str]:
    """A socket with a new conversation of its own (it is subscribed to it)."""
    ws = await open_socket(job.url, token)
    await ws.send(json.dumps({"type": "create_conversation", "title": "bench", "request_id": 0}))
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        while True:
            frame = json.loads(await ws.recv(decode=False))
            if frame["type"] == "response":
                return ws, str(frame["data"]["id"])
            if frame["type"] == "error":
                raise RuntimeError(f"create_conversation: {frame}")


async def one_stream(
    ws: ClientConnection, conversation_id: str, job: StreamJob, index: int, start_at_ns: int
) -> StreamResult:
    result = StreamResult()
    start_ns = start_at_ns + int(job.ramp_s * NS * index / job.total)
    await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / NS))
    reader = SseReader(result, job.interval_ns)
    result.start_ns = time.time_ns()
    send = {"type": "send_message", "conversation_id": conversation_id, "content": STREAM_MESSAGE}
    try:
        async with asyncio.timeout(job.tokens / job.rate + 60):
            await ws.send(json.dumps({**send, "request_id": 1}))
            while True:
                frame = await ws.recv(decode=False)
                at_ns = time.time_ns()
                assert isinstance(frame, bytes)
                if frame.startswith(b'{"type":"message_response"'):
                    break
                if frame.startswith(b'{"type":"error"'):
                    result.error = frame[:200].decode(errors="replace")
                    break
                # An event frame is the very JSON of SSE's `data:` line: measured by the SSE
                # bench's own parser, given the frame as that line.
                reader.feed(b"data: " + frame + b"\n\n", at_ns)
    except Exception as error:  # every failure is counted and reported
        result.error = f"{type(error).__name__}: {error}"[:200]
    return result


async def run_streams(job: StreamJob, conn: Connection) -> None:
    limiter = asyncio.Semaphore(job.in_flight)
    opened = await asyncio.gather(
        *(bounded(limiter, prepare(job, i, token)) for i, token in job.sockets),
        return_exceptions=True,
    )
    setup_errors = [
        f"{type(e).__name__}: {e}"[:200] for e in opened if isinstance(e, BaseException)
    ]
    conn.send(("ready", setup_errors))
    start_at_ns = await from_parent(conn, 120)
    cpu = own_cpu_s()
    pairs = [(i, o) for (i, _), o in zip(job.sockets, opened, strict=True) if isinstance(o, tuple)]
    results = await asyncio.gather(
        *(one_stream(ws, cid, job, i, start_at_ns) for i, (ws, cid) in pairs)
    )
    conn.send((list(results), own_cpu_s() - cpu))
    for _, (ws, _) in pairs:
        ws.transport.abort()


def stream_worker(job: StreamJob, conn: Connection) -> None:
    """Process entry: open the sockets and conversations, stream when told, report."""
    raise_open_files()
    uvloop.run(run_streams(job, conn))
