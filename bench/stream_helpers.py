"""Pieces shared by `bench/stream.py` and its server launcher `bench/bench_server.py`.

The benchmark providers, the client's SSE frame parser, /proc readings of a process, and
seeding the service's database (SQLite or PostgreSQL) directly, bypassing the API, with
conversations and history.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from actors.provider import ReplyInfo, ReplyPart, ReplyRequest, TextDelta
from storage.database import is_sqlite, normalise_url

# A user message containing `tokens=<n>` gets a reply of n tokens instead of the default.
_TOKENS_OVERRIDE = re.compile(r"\btokens=(\d+)\b")
NS = 1_000_000_000


# --- providers ----------------------------------------------------------------------------


def token_text() -> str:
    """One token: its emit time, so the client can measure provider → client delay."""
    return f"t{time.time_ns()} "


class PacedProvider:
    """Emits `tokens` tokens at `rate` per second: the first at once, token i at t0 + i/rate.

    The schedule is absolute, so a late token (the event loop was busy) does not delay the
    following ones; the client sees the lateness as emit time minus schedule.
    """

    def __init__(self, *, tokens: int, rate: float) -> None:
        self.tokens = tokens
        self.interval = 1.0 / rate

    def _count(self, request: ReplyRequest) -> int:
        asked = [t.content for t in request.history if t.role == "user"]
        found = _TOKENS_OVERRIDE.search(asked[-1]) if asked else None
        return int(found.group(1)) if found else self.tokens

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyPart, None]:
        count = self._count(request)
        yield ReplyInfo(model="bench-paced")
        start = anyio.current_time()
        for i in range(count):
            wait = start + i * self.interval - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
            yield TextDelta(token_text())
        yield ReplyInfo(prompt_tokens=len(request.history), completion_tokens=count)


class InstantProvider:
    """Answers at once with one token (for spawning many actors quickly)."""

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyPart, None]:
        yield ReplyInfo(model="bench-instant")
        await anyio.lowlevel.checkpoint()
        yield TextDelta("ok")
        yield ReplyInfo(prompt_tokens=len(request.history), completion_tokens=1)


# --- the client's SSE parser --------------------------------------------------------------


@dataclass
class StreamResult:
    """What one stream delivered. Times are `time.time_ns()` of the same machine clock."""

    start_ns: int = 0
    first_chunk_ns: int = 0
    first_emit_ns: int = 0
    last_chunk_ns: int = 0
    tokens: int = 0
    complete: bool = False
    error: str = ""
    delays_ns: list[int] = field(default_factory=list)
    lags_ns: list[int] = field(default_factory=list)
    received_ns: list[int] = field(default_factory=list)


class SseReader:
    """Splits the byte stream into frames and records every chunk event's delay.

    Only `data:` lines matter; only chunk events are JSON-decoded, the rest are told apart
    by their first bytes (the server always writes `{"type":"<type>"` first).
    """

    def __init__(self, result: StreamResult, interval_ns: int) -> None:
        self._result = result
        self._interval_ns = interval_ns
        self._buffer = b""

    def feed(self, chunk: bytes, at_ns: int) -> None:
        frames = (self._buffer + chunk).split(b"\n\n")
        self._buffer = frames.pop()
        for frame in frames:
            for line in frame.split(b"\n"):
                if line.startswith(b"data:"):
                    self._data(line[5:].lstrip(), at_ns)

    def _data(self, data: bytes, at_ns: int) -> None:
        if data.startswith(b'{"type":"chunk"'):
            self._chunk(data, at_ns)
        elif data.startswith(b'{"type":"complete"'):
            self._result.complete = True
        elif data.startswith((b'{"type":"error"', b'{"type":"cancelled"', b'{"type":"reset"')):
            self._result.error = data[:200].decode(errors="replace")

    def _chunk(self, data: bytes, at_ns: int) -> None:
        result = self._result
        emitted = int(json.loads(data)["content"][1:])
        if not result.tokens:
            result.first_chunk_ns, result.first_emit_ns = at_ns, emitted
        result.lags_ns.append(emitted - result.first_emit_ns - result.tokens * self._interval_ns)
        result.tokens += 1
        result.last_chunk_ns = at_ns
        result.delays_ns.append(at_ns - emitted)
        result.received_ns.append(at_ns)


# --- process readings ---------------------------------------------------------------------


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size in KiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy (not idle or iowait) since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Span:
    """A measured window: its wall seconds, and a server's and the machine's CPU % over it."""

    wall_s: float
    server_cpu_pct: float
    machine_cpu_pct: float


@dataclass(frozen=True)
class CpuMark:
    """A server's and the machine's CPU seconds, read when a window starting at `start_ns`
    (a `time.time_ns()` moment) is about to begin."""

    pid: int
    start_ns: int
    server_s: float
    machine_s: float

    @classmethod
    def read(cls, pid: int, start_ns: int) -> CpuMark:
        return cls(pid, start_ns, process_cpu_s(pid), machine_busy_s())

    def span(self) -> Span:
        """The window from `start_ns` to now."""
        wall = (time.time_ns() - self.start_ns) / NS
        server = (process_cpu_s(self.pid) - self.server_s) / wall * 100
        return Span(wall, server, (machine_busy_s() - self.machine_s) / wall * 100)


class PeakRss:
    """Samples a process's RSS every `every_s` in a thread, keeping the peak; also its CPU
    over consecutive windows of `window_s`: the busiest window and how many were busy."""

    def __init__(
        self, pid: int, every_s: float = 0.2, window_s: float = 1.0, busy_pct: float = 90.0
    ) -> None:
        self.pid = pid
        self.every_s = every_s
        self.window_s = window_s
        self.busy_pct = busy_pct
        self.peak_kib = rss_kib(pid)
        self.peak_cpu_pct = 0.0
        self.busy_windows = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        last_t, last_cpu = time.monotonic(), process_cpu_s(self.pid)
        while not self._stop.wait(self.every_s):
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            now = time.monotonic()
            if now - last_t >= self.window_s:
                cpu = process_cpu_s(self.pid)
                pct = (cpu - last_cpu) / (now - last_t) * 100
                self.peak_cpu_pct = max(self.peak_cpu_pct, pct)
                self.busy_windows += pct >= self.busy_pct
                last_t, last_cpu = now, cpu

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, rss_kib(self.pid))


def percentile(ordered: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (`share` in 0..1) of an ascending sequence; 0 if empty."""
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))])


# --- seeding the database directly ---------------------------------------------------------

HISTORY_TEXT = (
    "Thanks for getting in touch. Your order shipped yesterday and should arrive within "
    "three working days; the tracking link is in the confirmation email we sent you."
)


def seed_engine(database_url: str) -> AsyncEngine:
    """An engine on the service's database (asyncpg or aiosqlite, as the service uses);
    the service's own column types do the encoding."""
    url = normalise_url(database_url)
    connect_args = {"timeout": 30} if is_sqlite(url) else {}
    return create_async_engine(url, connect_args=connect_args)


def run_seed(database_url: str, work: Callable[[AsyncConnection], Awaitable[None]]) -> None:
    """Run `work` in one transaction on a fresh engine, from synchronous code."""

    async def main() -> None:
        engine = seed_engine(database_url)
        try:
            async with engine.begin() as conn:
                await work(conn)
        finally:
            await engine.dispose()

    asyncio.run(main())


def history_rows(conversation_ids: Sequence[uuid.UUID], per: int) -> list[dict[str, Any]]:
    """`per` complete messages per conversation, seq 1..per with no gaps, user then assistant."""
    start = datetime.now(UTC) - timedelta(days=1)
    return [
        {
            "id": uuid.uuid4(),
            "conversation_id": conversation_id,
            "seq": seq,
            "role": "user" if seq % 2 else "assistant",
            "content": HISTORY_TEXT,
            "status": "complete",
            "entity_references": [],
            "entity_links": [],
            "created_at": start + timedelta(seconds=seq),
        }
        for conversation_id in conversation_ids
        for seq in range(1, per + 1)
    ]


def seed_history(database_url: str, conversation_ids: Sequence[uuid.UUID], per: int) -> None:
    """Give existing (empty) conversations `per` messages each, seq 1..per, and set their
    `total_messages` to match, in one transaction (SQLite or PostgreSQL)."""
    from storage.tables import conversations, messages

    async def work(conn: AsyncConnection) -> None:
        rows = history_rows(conversation_ids, per)
        if rows:
            await conn.execute(messages.insert(), rows)
        await conn.execute(
            sa.update(conversations)
            .where(conversations.c.id.in_(list(conversation_ids)))
            .values(total_messages=per)
        )

    run_seed(database_url, work)


def seed_user_conversations(database_url: str, count: int, per: int) -> uuid.UUID:
    """A user with `count` conversations of `per` messages each; returns the user's id.

    Written behind the API's back, so the counters the API keeps are set here:
    `users.total_conversations` and each conversation's `total_messages`.
    """
    from storage.tables import conversations, messages, users

    user_id = uuid.uuid4()
    start = datetime.now(UTC) - timedelta(days=2)
    ids = [uuid.uuid4() for _ in range(count)]

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(
            users.insert().values(
                id=user_id,
                email="idle@parley.example",
                password_hash="-",
                display_name=None,
                is_active=True,
                created_at=start,
                total_conversations=count,
            )
        )
        await conn.execute(
            conversations.insert(),
            [
                {
                    "id": conversation_id,
                    "user_id": user_id,
                    "title": f"Idle {i}",
                    "title_set_by_user": False,
                    "created_at": start + timedelta(milliseconds=i),
                    "updated_at": start + timedelta(milliseconds=i),
                    "total_messages": per,
                    "retention_days": 30,
                }
                for i, conversation_id in enumerate(ids)
            ],
        )
        if per:
            await conn.execute(messages.insert(), history_rows(ids, per))

    run_seed(database_url, work)
    return user_id
