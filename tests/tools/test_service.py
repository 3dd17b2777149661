"""The tool service over real stdio servers: listing, calling, restarts, timeouts, shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

from chat.tools.config import ServerConfig, configured_servers
from chat.tools.service import ToolService
from chat.tools.supervisor import Timing
from tests.tools.conftest import MARKER, TIMING, Running, tool_settings
from tests.tools.processes import pids_with_env, wait_until, wait_until_gone

pytestmark = pytest.mark.anyio


def state(running: Running, name: str) -> tuple[str, str | None, int]:
    found = {s.name: s for s in running.service.status()}[name]
    return found.state, found.last_error, found.restarts


async def test_parley_and_a_pypi_server_are_listed_and_called(running: Running) -> None:
    # Nothing runs before the first use.
    assert running.processes() == set()
    assert state(running, "parley")[0] == "idle"

    names = {spec.name for spec in await running.service.specs()}

    assert {"parley__search_knowledge_base", "time__get_current_time", "stub__echo"} <= names
    assert not any(name.startswith(("broken__", "off__")) for name in names)
    found = await running.call("parley__search_knowledge_base", query="How do I get a refund?")
    assert found.ok, found.text
    best = found.data["articles"][0]
    assert "refund" in best["slug"]
    assert best["url"] == f"https://help.example.com/articles/{best['slug']}"
    assert "refund" in best["text"].lower()
    now = await running.call("time__get_current_time", timezone="Europe/Paris")
    assert now.ok, now.text
    assert now.data["timezone"] == "Europe/Paris"
    assert state(running, "off")[0] == "disabled"


async def test_a_tool_error_and_an_unknown_tool_are_results_not_exceptions(
    running: Running,
) -> None:
    bad = await running.call("time__get_current_time", timezone="Not/AZone")
    assert not bad.ok
    assert "Not/AZone" in bad.text
    missing = await running.call("time__no_such_tool")
    assert not missing.ok
    unknown = await running.call("nowhere__tool")
    assert (unknown.ok, unknown.text) == (False, "there is no tool named 'nowhere__tool'")
    # The server is still up and answers.
    assert (await running.call("stub__echo", text="still here")).data["text"] == "still here"
    assert state(running, "stub") == ("ready", None, 0)


async def test_a_killed_server_is_restarted_by_the_next_call(running: Running) -> None:
    first = await running.call("stub__echo", text="one")
    assert first.ok
    pid = int(first.data["pid"])
    os.kill(pid, signal.SIGKILL)
    await wait_until_gone({pid})

    second = await running.call("stub__echo", text="two")

    assert second.ok, second.text
    assert second.data["text"] == "two"
    assert int(second.data["pid"]) != pid
    assert state(running, "stub")[0] == "ready"
    assert state(running, "stub")[2] == 1


async def test_a_hung_call_times_out_and_the_server_is_replaced(running: Running) -> None:
    first = await running.call("stub__echo", text="before")
    hung_pid = int(first.data["pid"])
    started = anyio.current_time()

    outcome = await running.call("stub__hang")

    assert not outcome.ok
    assert outcome.text == "stub__hang did not answer within 2 s"
    assert 2 <= anyio.current_time() - started < 10
    # The hung process is stopped and a new one answers.
    await wait_until_gone({hung_pid})
    after = await running.call("stub__echo", text="after")
    assert after.ok, after.text
    assert int(after.data["pid"]) != hung_pid
    assert "took over 2 s" in (state(running, "stub")[1] or "") or state(running, "stub")[0]


async def test_a_server_that_dies_mid_call_fails_that_call_once_retried(
    running: Running,
) -> None:
    outcome = await running.call("stub__crash")
    assert not outcome.ok
    assert outcome.text == "stub__crash failed: Connection closed"
    # Restarted for the retry and again after it; the next call works.
    assert (await running.call("stub__echo", text="ok")).ok
    assert state(running, "stub")[2] == 2


async def test_a_server_that_cannot_start_does_not_hide_the_others(running: Running) -> None:
    names = {spec.name for spec in await running.service.specs()}
    assert "time__get_current_time" in names
    status, error, _ = state(running, "broken")
    assert status == "failed"
    assert error is not None and error.startswith("command not found")
    # Calling it fails at once with the reason, and the others still answer.
    started = anyio.current_time()
    outcome = await running.call("broken__anything")
    assert anyio.current_time() - started < 1
    assert not outcome.ok
    assert "command not found" in outcome.text
    assert (await running.call("stub__echo", text="fine")).ok


async def test_the_tool_list_is_refreshed_when_the_server_says_it_changed(
    running: Running,
) -> None:
    assert "stub__added" not in {s.name for s in await running.service.specs()}
    assert (await running.call("stub__add_tool")).ok
    with anyio.fail_after(10):
        while True:
            if "stub__added" in {s.name for s in await running.service.specs()}:
                break
            await anyio.sleep(0.02)
    assert (await running.call("stub__added")).text == "added"


async def test_closing_during_a_call_stops_every_server(running: Running) -> None:
    await running.service.specs()
    outcomes = []

    async def call() -> None:
        outcomes.append(await running.call("stub__hang"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await wait_until(running.hang_file.exists)
        processes = running.processes()
        assert len(processes) == 3  # parley, time, stub
        with anyio.fail_after(10):
            await running.service.close()
        assert running.processes() == set()
        tg.cancel_scope.cancel()
    assert pids_with_env(MARKER, running.marker) == set()


async def test_cancelling_a_caller_mid_call_keeps_the_server_and_the_service(
    running: Running,
) -> None:
    pid = int((await running.call("stub__echo", text="first")).data["pid"])
    async with anyio.create_task_group() as tg:
        tg.start_soon(running.call, "stub__hang")
        await wait_until(running.hang_file.exists)
        tg.cancel_scope.cancel()
    # The same process answers the next call: a caller going away is not a server failure.
    after = await running.call("stub__echo", text="next")
    assert after.ok
    assert int(after.data["pid"]) == pid


async def test_a_frozen_server_fails_its_health_check_and_is_replaced(
    tmp_path: Path, sqlite_template: Path
) -> None:
    settings, marker = tool_settings(tmp_path, sqlite_template)
    [stub] = [s for s in configured_servers(settings) if s.name == "stub"]
    # Pinged after 0.3 s of quiet, and given 2 s to answer.
    timing = Timing(start_s=TIMING.start_s, health_s=0.3, ping_s=2.0, backoff_max_s=0.5)
    service = ToolService([stub], tools_secret="unused", call_timeout_s=10, timing=timing)
    running = Running(service, settings, marker, tmp_path / "hanging")
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        pid = int((await running.call("stub__echo", text="one")).data["pid"])
        os.kill(pid, signal.SIGSTOP)
        try:
            await wait_until(lambda: state(running, "stub")[2] == 1)
            assert "health check failed" in (state(running, "stub")[1] or "")
            await wait_until_gone({pid})
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        after = await running.call("stub__echo", text="two")
        assert after.ok, after.text
        assert int(after.data["pid"]) != pid
        await service.close()
        tg.cancel_scope.cancel()
    assert pids_with_env(MARKER, marker) == set()


async def test_a_server_that_hangs_at_start_delays_only_the_first_use(
    tmp_path: Path, sqlite_template: Path
) -> None:
    settings, marker = tool_settings(tmp_path, sqlite_template)
    [time_server] = [s for s in configured_servers(settings) if s.name == "time"]
    # A process that never answers `initialize`.
    mute = ServerConfig(
        "mute", sys.executable, ("-c", "import time; time.sleep(3600)"), {MARKER: marker}
    )
    timing = Timing(start_s=3.0, health_s=30.0, backoff_max_s=0.5)
    service = ToolService([mute, time_server], tools_secret="x", call_timeout_s=10, timing=timing)
    running = Running(service, settings, marker, tmp_path / "hanging")
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        first = {s.name for s in await service.specs()}
        assert state(running, "mute")[:2] == ("failed", "it did not start within 3 s")
        # It is retried with backoff, but nobody waits for it any more.
        for _ in range(3):
            started = anyio.current_time()
            assert {s.name for s in await service.specs()} >= first
            failed = await running.call("mute__anything")
            assert anyio.current_time() - started < 1
            assert failed.text == (
                "mute__anything is unavailable: the server could not start: "
                "it did not start within 3 s"
            )
        assert state(running, "mute")[2] >= 1
        await service.close()
        tg.cancel_scope.cancel()
    assert pids_with_env(MARKER, marker) == set()
