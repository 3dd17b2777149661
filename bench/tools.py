"""Tool-call overhead: `search_knowledge_base` through the MCP session against the same
function in-process, and the restart time of a killed MCP server.

    .venv/bin/python bench/tools.py --calls 500 --restarts 5

Runs the tool service as Parley does (chat/tools/): Parley's own server, started by
`python -m chat.cli mcp-server` over stdio, and `mcp-server-time` (from PyPI) for a
third-party server's restart. Prints a markdown report on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio

from chat.assistant.knowledge import KnowledgeBase, load_articles
from chat.settings import Settings, load_settings
from chat.tools.config import ServerConfig, configured_servers
from chat.tools.identity import derive_tools_secret
from chat.tools.server import search_articles
from chat.tools.service import ToolService
from chat.tools.supervisor import STABLE_S

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "tests" / "assistant" / "kb_questions.json"
TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")
MARKER = "PARLEY_BENCH_MCP"
USER, CONVERSATION = uuid.uuid4(), uuid.uuid4()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--restarts", type=int, default=5, help="kills per server")
    return parser.parse_args(argv)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def server_pids(name: str, value: str) -> set[int]:
    """Live processes whose environment has `name=value` (read from /proc)."""
    wanted = f"{name}={value}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted in entry.joinpath("environ").read_bytes().split(b"\0"):
                state = entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.add(int(entry.name))
        except OSError:
            continue
    return found


async def timed_calls(
    call: Callable[[str], Awaitable[object]], queries: list[str], calls: int, concurrency: int
) -> tuple[list[float], float]:
    """Latency of each call, `concurrency` callers at a time, and the wall time of all."""
    latencies: list[float] = []
    next_index = iter(range(calls))

    async def caller() -> None:
        for index in next_index:
            started = time.perf_counter()
            await call(queries[index % len(queries)])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(caller)
    return latencies, time.perf_counter() - started


def bench_settings(folder: Path) -> Settings:
    servers = {"time": {"command": TIME_SERVER, "env": {MARKER: str(folder)}}}
    config = folder / "mcp.json"
    config.write_text(json.dumps({"mcpServers": servers}))
    return load_settings(
        {
            "PARLEY_VAR_DIR": str(folder / "var"),
            "JWT_SECRET": "bench-secret-" + "b" * 40,
            "MCP_CONFIG": str(config),
            "LOG_LEVEL": "WARNING",
        }
    )


async def restart_times(
    service: ToolService, server: ServerConfig, pids: Callable[[], set[int]], count: int
) -> list[float]:
    """Kill the server's process, then time the next call until it answers (restarted):
    the old process's end noticed, a new one spawned, initialised and its tools listed."""
    name, arguments = (
        ("parley__search_knowledge_base", {"query": "refund"})
        if server.name == "parley"
        else ("time__get_current_time", {"timezone": "UTC"})
    )
    times = []
    for _ in range(count):
        # A server that ran for STABLE_S restarts at once (a shorter life backs off first):
        # this measures the restart itself.
        await anyio.sleep(STABLE_S + 0.5)
        before = await service.call(name, arguments, user_id=USER, conversation_id=CONVERSATION)
        assert before.ok, before.text
        [pid] = pids()
        os.kill(pid, signal.SIGKILL)
        started = time.perf_counter()
        after = await service.call(name, arguments, user_id=USER, conversation_id=CONVERSATION)
        assert after.ok, after.text
        times.append(time.perf_counter() - started)
    return times


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


async def run(args: argparse.Namespace) -> None:
    knowledge = KnowledgeBase(load_articles())
    queries = [q["question"] for q in json.loads(QUESTIONS.read_text())]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="parley-bench-tools-") as tmp:
        folder = Path(tmp)
        settings = bench_settings(folder)
        servers = configured_servers(settings)
        service = ToolService(
            servers, tools_secret=derive_tools_secret(settings.jwt_secret), call_timeout_s=30
        )
        url = settings.kb_article_url

        async def in_process(query: str) -> object:
            return search_articles(knowledge, query, url)

        async def through_mcp(query: str) -> object:
            outcome = await service.call(
                "parley__search_knowledge_base",
                {"query": query},
                user_id=USER,
                conversation_id=CONVERSATION,
            )
            assert outcome.ok, outcome.text
            return outcome.data

        rows = []
        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
            started = time.perf_counter()
            await service.specs()
            cold_start = time.perf_counter() - started
            # Warm both paths (imports, caches, the session's first requests).
            await timed_calls(in_process, queries, 50, 1)
            await timed_calls(through_mcp, queries, 50, 1)
            for concurrency in args.concurrency:
                base, base_wall = await timed_calls(in_process, queries, args.calls, 1)
                mcp, mcp_wall = await timed_calls(through_mcp, queries, args.calls, concurrency)
                rows.append((concurrency, base, base_wall, mcp, mcp_wall))
            var = str(settings.parley_var_dir.resolve())
            restarts = {
                "parley": await restart_times(
                    service, servers[0], lambda: server_pids("PARLEY_VAR_DIR", var), args.restarts
                ),
                "time": await restart_times(
                    service, servers[1], lambda: server_pids(MARKER, tmp), args.restarts
                ),
            }
            await service.close()
            tg.cancel_scope.cancel()
    load_after = os.getloadavg()
    report(args, rows, cold_start, restarts, load_before, load_after)


def report(
    args: argparse.Namespace,
    rows: list[tuple[int, list[float], float, list[float], float]],
    cold_start: float,
    restarts: dict[str, list[float]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    print(
        f"- Machine: {machine()}; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
    )
    print(
        f"- `search_knowledge_base`, {args.calls} calls per row, queries from "
        "tests/assistant/kb_questions.json in turn; in-process = `search_articles()` alone, "
        "one caller"
    )
    print()
    print(
        "| callers | in-process p50 ms | p99 ms | through MCP p50 ms | p99 ms "
        "| p50 ratio | p99 ratio | MCP calls/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for concurrency, base, _, mcp, mcp_wall in rows:
        b50, b99 = percentile(base, 0.5), percentile(base, 0.99)
        m50, m99 = percentile(mcp, 0.5), percentile(mcp, 0.99)
        print(
            f"| {concurrency} | {ms(b50)} | {ms(b99)} | {ms(m50)} | {ms(m99)} "
            f"| {m50 / b50:.1f}x | {m99 / b99:.1f}x | {len(mcp) / mcp_wall:,.0f} |"
        )
    print()
    print(
        f"- Cold start (first `specs()`: both servers spawned, initialised, listed): "
        f"{cold_start:.2f} s"
    )
    print()
    print("| server | restarts | median s | max s | vs one in-process search (p50) |")
    print("|---|---|---|---|---|")
    base50 = percentile(rows[0][1], 0.5)
    for name, times in restarts.items():
        median = statistics.median(times)
        print(
            f"| {name} | {len(times)} | {median:.2f} | {max(times):.2f} | {median / base50:,.0f}x |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    anyio.run(run, parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
