"""The cold actor part of `bench/stream.py`: the first `POST /messages` on an actor that
must load its history, against the second on the same, now warm, actor; and its table."""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass

import httpx
from stream_helpers import seed_history
from stream_server import CONVERSATIONS, Context, create_conversations


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


def cold_table(cold: dict[int, list[ColdSample]]) -> list[str]:
    """The markdown table of the cold actor timings, a row per history length."""
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
