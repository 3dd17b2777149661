"""The idle actor mode of `bench/stream.py` (`--idle-actors N`): in fresh processes, spawn N
actors over a migrated SQLite file (one message each, answered at once) and report the
memory of an idle actor, by RSS and by tracemalloc, beside the size of its history.

The measuring process is this file run with the run's spec, a JSON object (database URL,
user id, whether to trace), as its one argument; it prints its figures as one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from rest import migrate
from stream_helpers import InstantProvider, rss_kib, seed_user_conversations
from stream_report import machine_lines, verdict
from stream_server import ROOT, SETUP_PARALLEL, bench_env, sqlite_url

from actors.config import ActorConfig
from actors.hub import Hub, HubLimits
from actors.provider import Turn
from actors.registry import Registry
from actors.store import DatabaseStore, Store
from storage.database import create_database, prepare
from storage.rows import as_uuid
from storage.tables import conversations

TARGET_IDLE_KIB = 20.0
IDLE_WARMUP = 100
HISTORY_SAMPLE = 1000
RESULT_MARK = "IDLE_JSON "
BREAKDOWN_ROWS = 12
HUB_FILES = ("actors/hub.py", "actors/events.py")
Rows = list[tuple[int, dict[str, Any], dict[str, Any]]]


# --- the measuring process ----------------------------------------------------------------


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


async def history_bytes(
    store: Store, user_id: uuid.UUID, ids: list[uuid.UUID], limit: int
) -> float:
    """tracemalloc size of an actor's Turn list, rebuilt the way the actor loads it."""
    await store.load_history(user_id, ids[0], limit)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    kept = []
    for conversation_id in ids:
        recent = await store.load_history(user_id, conversation_id, limit)
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
        found["history"] = await history_bytes(registry.store, user_id, sample, limit)
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
            )
            await tg.start(registry.run)
            found = await spawn_and_measure(
                registry, hub, uuid.UUID(spec["user_id"]), ids, spec["trace"]
            )
            await registry.drain()
            tg.cancel_scope.cancel()
    finally:
        await db.disconnect()
    return found


def idle_worker_main(spec_json: str) -> int:
    """The measuring process: print its figures as one marked JSON line."""
    spec = json.loads(spec_json)
    found = anyio.run(idle_worker, spec, backend_options={"use_uvloop": True})
    print(RESULT_MARK + json.dumps(found))
    return 0


# --- the parent ---------------------------------------------------------------------------


def idle_run(count: int, history: int, trace: bool) -> dict[str, Any]:
    """Seed a fresh database, then measure in a fresh process; its figures."""
    with tempfile.TemporaryDirectory(prefix="parley-idle-") as name:
        var = Path(name) / "var"
        env = bench_env(var, {})
        migrate(env)
        database_url = sqlite_url(var)
        user_id = seed_user_conversations(database_url, count + IDLE_WARMUP, history)
        spec = {"database": database_url, "user_id": str(user_id), "trace": trace}
        cmd = [sys.executable, str(Path(__file__).resolve()), json.dumps(spec)]
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the idle worker failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT_MARK))
    return dict(json.loads(line.removeprefix(RESULT_MARK)))


def idle_table(rows: Rows) -> list[str]:
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


def breakdown_table(rows: Rows) -> list[str]:
    lines = [
        "| history messages | where allocated (tracemalloc, by file) | bytes per actor |",
        "|---:|---|---:|",
    ]
    for history, _, traced in rows:
        for name, size in traced["by_file"]:
            lines.append(f"| {history} | `{name}` | {size:.0f} |")
    return lines


def idle_report(rows: Rows, count: int) -> str:
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
    """The idle actor mode: an RSS run and a tracemalloc run per history length; the report."""
    rows: Rows = []
    for history in args.idle_history:
        print(f"  idle actors, history {history}: RSS run", file=sys.stderr)
        rss = idle_run(args.idle_actors, history, trace=False)
        print(f"  idle actors, history {history}: tracemalloc run", file=sys.stderr)
        traced = idle_run(args.idle_actors, history, trace=True)
        rows.append((history, rss, traced))
    return idle_report(rows, args.idle_actors)


if __name__ == "__main__":
    sys.exit(idle_worker_main(sys.argv[1]))
