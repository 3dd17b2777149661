"""`parley serve --workers N`: N real instance processes on one port, a private Redis (issue 8)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from tests.accounts import BASE, new_conversation, sign_up
from tests.cluster import (
    cluster_env,
    events_while,
    first_chunk,
    read_sse,
    send_ok,
    seqs,
    streaming,
    without_gaps,
)
from tests.redis_server import RedisServer
from tests.server import Server, running_server
from tests.test_cli import one_error_line, run

pytestmark = pytest.mark.anyio
WAIT_S = 20
WORKERS = ("--workers", "2")
# SHUTDOWN_GRACE_S (10 s) + the store deadline (3 s): docs/design.md's shutdown budget.
SHUTDOWN_BUDGET_S = 13


@pytest.fixture(name="env", scope="module")
def fixture_env(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> dict[str, str]:
    return cluster_env(
        tmp_path_factory.mktemp("workers"),
        redis_server,
        # Slow enough to cancel a reply while it runs.
        assistant_token_delay_ms="20",
        redis_timeout_s="0.5",
    )


@pytest.fixture(name="workers", scope="module")
def fixture_workers(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "workers.log"
    with running_server(env, log, args=WORKERS) as server:
        yield server
        assert server.stop() == 0
    assert "Traceback" not in server.log_text()


@asynccontextmanager
async def pinned(
    server: Server, avoid: frozenset[int] = frozenset()
) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    """A client on one kept-alive connection, to a worker whose pid is not in `avoid`.

    Which worker accepts a connection is the kernel's choice: new connections are tried until
    one lands on a wanted worker (the caller's deadline bounds the tries).
    """
    while True:
        client = httpx.AsyncClient(
            base_url=server.url, timeout=WAIT_S, limits=httpx.Limits(max_connections=1)
        )
        try:
            pid = int((await client.get("/readyz")).json()["pid"])
            if pid not in avoid:
                yield client, pid
                return
        finally:
            await client.aclose()


@dataclass
class Pair:
    """A user, a new conversation of theirs, and a client pinned to each of two workers."""

    to_a: httpx.AsyncClient
    a_pid: int
    to_b: httpx.AsyncClient
    b_pid: int
    server: Server  # the clients carry the URL
    me: dict[str, str]
    cid: str


@asynccontextmanager
async def two_workers(workers: Server) -> AsyncIterator[Pair]:
    async with (
        pinned(workers) as (to_a, a_pid),
        pinned(workers, frozenset({a_pid})) as (to_b, b_pid),
    ):
        server = Server(workers.process, "", workers.log)
        _, me = await sign_up(to_a, server)
        cid = await new_conversation(to_a, server, me)
        yield Pair(to_a, a_pid, to_b, b_pid, server, me, cid)


async def both_pids(server: Server) -> set[int]:
    """The pids of the workers behind `server`, each seen answering on a connection of its own."""
    async with pinned(server) as (_, first), pinned(server, frozenset({first})) as (_, second):
        return {first, second}


def test_more_than_one_worker_without_redis_is_one_line_before_binding(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        # A port in use and a database never made: neither is what it says, so it said first.
        result = run(
            tmp_path,
            "serve",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{busy.getsockname()[1]}",
            database_url=f"sqlite:///{tmp_path / 'never-made.db'}",
        )
    assert result.returncode == 2
    assert one_error_line(result).startswith("error: --workers 2 needs REDIS_URL: ")


async def test_both_workers_take_connections(workers: Server) -> None:
    with anyio.fail_after(WAIT_S):
        pids = await both_pids(workers)
    assert len(pids) == 2
    assert workers.process.pid not in pids  # the parent serves nothing


async def test_a_message_to_one_worker_streams_to_sse_on_the_other(workers: Server) -> None:
    with anyio.fail_after(WAIT_S):
        async with two_workers(workers) as pair:
            to_a, a_pid, to_b, b_pid = pair.to_a, pair.a_pid, pair.to_b, pair.b_pid
            server, me, cid = pair.server, pair.me, pair.cid
            assert a_pid != b_pid
            # Still B's connection, kept alive: the stream goes over it next.
            assert int((await to_b.get("/readyz")).json()["pid"]) == b_pid
            on_b = await events_while(to_b, server, me, cid, lambda: send_ok(to_a, server, me, cid))
            # A's connection stayed on A for every request.
            assert int((await to_a.get("/readyz")).json()["pid"]) == a_pid
    kinds = [json.loads(data)["type"] for _, data in on_b]
    assert kinds[0] == "message" and kinds[-1] == "complete" and "chunk" in kinds
    assert without_gaps(seqs(on_b))


async def test_cancel_on_one_worker_stops_the_reply_running_on_the_other(workers: Server) -> None:
    with anyio.fail_after(WAIT_S):
        async with two_workers(workers) as pair:
            to_a, to_b, me, cid = pair.to_a, pair.to_b, pair.me, pair.cid
            async with streaming(to_a, pair.server, me, cid) as frames:
                reply_id = await first_chunk(frames)
                answer = await to_b.post(f"{BASE}/{cid}/cancel", headers=me)
                assert answer.json() == {"cancelled": True}
                rest = [json.loads(data) async for data in frames]
            stored = (await to_b.get(f"{BASE}/{cid}/messages", headers=me)).json()["items"]
    assert (rest[-1]["type"], rest[-1]["message_id"]) == ("cancelled", reply_id)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "cancelled"),
    ]


async def test_a_stream_resumes_on_the_other_worker_from_its_last_event_id(
    workers: Server,
) -> None:
    with anyio.fail_after(WAIT_S):
        async with two_workers(workers) as pair:
            to_a, to_b, server, me, cid = pair.to_a, pair.to_b, pair.server, pair.me, pair.cid
            on_a = await events_while(to_a, server, me, cid, lambda: send_ok(to_b, server, me, cid))
            middle = len(on_a) // 2
            resumed = await read_sse(to_b, server, me, cid, anyio.Event(), on_a[middle][0])
    # Each event after the position, exactly once, as the same bytes.
    assert resumed == on_a[middle + 1 :]


def bridge_instances(log: str) -> dict[int, str]:
    """pid → the Redis bridge instance id each worker logged when it connected."""
    found = re.findall(
        r"\[(\d+)\] INFO actors\.bridge: Redis bridge connected as instance (\w+)", log
    )
    return {int(pid): instance for pid, instance in found}


async def test_sigterm_to_the_parent_stops_every_worker_with_exit_0(
    env: dict[str, str], tmp_path: Path
) -> None:
    with running_server(env, tmp_path / "workers.log", args=WORKERS) as server:
        with anyio.fail_after(WAIT_S + SHUTDOWN_BUDGET_S):
            async with (
                pinned(server) as (to_a, a_pid),
                pinned(server, frozenset({a_pid})) as (to_b, b_pid),
            ):
                pids = {a_pid, b_pid}
                # Each worker is a member of the cluster of its own, with its own instance id.
                instances = bridge_instances(server.log_text())
                assert set(instances) == pids and len(set(instances.values())) == 2
                over_urls = Server(server.process, "", server.log)  # the clients carry the URL
                _, me = await sign_up(to_a, over_urls)
                cid = await new_conversation(to_a, over_urls, me)
                async with anyio.create_task_group() as tg:
                    # An open event stream on each worker: the stop ends them, not a timeout.
                    for client in (to_a, to_b):
                        ready = anyio.Event()
                        tg.start_soon(read_sse, client, over_urls, me, cid, ready)
                        await ready.wait()
                    started = time.monotonic()
                    code = await anyio.to_thread.run_sync(server.stop, SHUTDOWN_BUDGET_S)
        assert code == 0
        assert time.monotonic() - started < SHUTDOWN_BUDGET_S
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped and reaped by the parent
    log = server.log_text()
    assert "Traceback" not in log
    assert (
        f"[{server.process.pid}] INFO chat.workers: received SIGTERM, stopping the workers" in log
    )


async def test_a_worker_that_dies_stops_the_others_and_the_parent_fails(
    env: dict[str, str], tmp_path: Path
) -> None:
    with running_server(env, tmp_path / "workers.log", args=WORKERS) as server:
        with anyio.fail_after(WAIT_S):
            pids = await both_pids(server)
        victim, survivor = sorted(pids)
        os.kill(victim, signal.SIGKILL)
        code = await anyio.to_thread.run_sync(server.process.wait, SHUTDOWN_BUDGET_S)
        assert code == 1
    with pytest.raises(ProcessLookupError):
        os.kill(survivor, 0)
    lines = [line for line in server.log_text().splitlines() if f"worker {victim} " in line]
    assert len(lines) == 1
    assert lines[0].endswith(f"worker {victim} was ended by SIGKILL; stopping the others")


async def test_workers_stop_when_the_parent_is_killed(env: dict[str, str], tmp_path: Path) -> None:
    with running_server(env, tmp_path / "workers.log", args=WORKERS) as server:
        with anyio.fail_after(WAIT_S):
            pids = await both_pids(server)
        # They are not our children: a pidfd is what can be waited on for their end.
        pidfds = [os.pidfd_open(pid) for pid in pids]
        try:
            server.process.kill()
            server.process.wait()
            deadline = time.monotonic() + SHUTDOWN_BUDGET_S
            while pidfds and time.monotonic() < deadline:
                ended, _, _ = select.select(pidfds, [], [], deadline - time.monotonic())
                for fd in ended:
                    pidfds.remove(fd)
                    os.close(fd)
            assert not pidfds, "a worker outlived its parent"
        finally:
            for fd in pidfds:
                os.close(fd)
    assert "the parent process" in server.log_text()
