"""What rate limiting and metrics cost: bench/rest.py's routes on two servers, off and on.

Both servers run at once on one fresh PostgreSQL database (the idle one costs nothing), with
the same user and data. "off": no limits at all and no metrics. "on": METRICS_ENABLED=true,
the sign-in throttles at their defaults, a message budget and a concurrent-reply limit set
high enough never to refuse (so every message pays for the check, none is refused). The
routes are bench/rest.py's plus a synchronous `POST …/messages` (rotating over 64
conversations), which pays for the budget check, the reply slot and the reply metrics. Each
route and concurrency runs off, on, on, off (ABBA), so a drift of the machine's load during
the run falls on both alike; the figures are the means of the two runs of each.

    .venv/bin/python bench/operate.py --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from chat.settings import Settings

from rest import (
    Context,
    Result,
    Target,
    free_port,
    fresh_database,
    hypercorn_config,
    machine_lines,
    measure,
    migrate,
    register_and_login,
    require_wrk,
    running_server,
    seed,
    server_env,
    show_log,
    targets_for,
    write_scripts,
)

OFF = {
    "AUTH_RATE_PER_ADDRESS": "",
    "AUTH_RATE_PER_EMAIL": "",
    "USER_MESSAGE_RATE": "",
    "USER_CONCURRENT_REPLIES": "0",
    "METRICS_ENABLED": "false",
}
ON = {
    "USER_MESSAGE_RATE": "1000000/minute;10000000/day",
    "USER_CONCURRENT_REPLIES": "1000",
    "METRICS_ENABLED": "true",
}
QUESTION = "How do I reset my password?"
ROTATING = 64


def message_lua(conversation_ids: Sequence[object]) -> str:
    """POST a message to each of the conversations in turn (one actor each)."""
    paths = ", ".join(f'"/api/v1/chat/conversations/{c}/messages"' for c in conversation_ids)
    # `wrk.format` with headers of its own would drop the -H Authorization header: set the
    # method, body and content type on `wrk` itself and pass only the path.
    return f"""
local paths = {{{paths}}}
local n = 0
wrk.method = "POST"
wrk.body = '{{"message":"{QUESTION}"}}'
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  return wrk.format(nil, paths[(n % #paths) + 1])
end
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20, help="per conversation")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server")
    parser.add_argument("--admin-db", default="test", help="database to connect to for CREATE")
    parser.add_argument("--out", type=Path, help="append the markdown report to this file")
    parser.add_argument(
        "--messages-route",
        action="store_true",
        help="also the synchronous POST of a message (the local assistant's ranking makes it "
        "~30 ms of CPU each: wrk's 2 s timeout cuts it at 32 connections on 2 cores)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds per route")
    return parser.parse_args(argv)


def check(ctx: Context, targets: Sequence[Target], message_path: str) -> None:
    """One request per route on this server: all must answer 2xx (wrk counts only >= 400)."""
    headers = {"Authorization": f"Bearer {ctx.token}"}
    with httpx.Client(base_url=ctx.base_url, headers=headers, timeout=30.0) as client:
        for target in targets:
            if target.path == message_path:
                body: dict[str, str] | None = {"message": QUESTION}
            else:
                body = {"title": "bench"} if target.method == "POST" else None
            response = client.request(target.method, target.path, json=body)
            if not 200 <= response.status_code < 300:
                raise RuntimeError(f"{target.name}: {response.status_code} {response.text[:200]}")


def bench(args: argparse.Namespace, wrk: str, tmp: Path, url: str) -> list[tuple[str, Result]]:
    base = server_env(url, tmp / "var")
    migrate(base)
    config = hypercorn_config(tmp)
    logs = {"off": tmp / "off.log", "on": tmp / "on.log"}
    results: list[tuple[str, Result]] = []
    with ExitStack() as stack:
        pids, urls = {}, {}
        for mode, settings in (("off", OFF), ("on", ON)):
            port = free_port()
            env = base | settings
            pids[mode] = stack.enter_context(running_server(env, config, port, logs[mode]))
            urls[mode] = f"http://127.0.0.1:{port}"
        user_id, token = register_and_login(urls["off"])
        ids = asyncio.run(seed(url, user_id, args.conversations, args.messages))
        targets = targets_for(ids[0])
        message_path = f"/api/v1/chat/conversations/{ids[1]}/messages"
        if args.messages_route:
            targets.append(
                Target(
                    "POST /api/v1/chat/conversations/<id>/messages",
                    message_path,
                    method="POST",
                    lua=message_lua(ids[1 : 1 + ROTATING]),
                )
            )
        scripts = write_scripts(tmp, targets)
        contexts = {
            mode: Context(wrk, urls[mode], token, pids[mode], scripts, url, user_id)
            for mode in ("off", "on")
        }
        for ctx in contexts.values():
            check(ctx, targets, message_path)
        for concurrency in args.concurrency:
            for target in targets:
                for mode in ("off", "on", "on", "off") * args.rounds:
                    result = measure(contexts[mode], target, concurrency, args)
                    results.append((mode, result))
    for log in logs.values():
        show_log(log, everything=False)
    return results


def report(head: list[str], results: list[tuple[str, Result]]) -> tuple[str, bool]:
    lines = [*head, ""]
    lines += [
        "| C | route | off req/s | on req/s | on / off | off p99 ms | on p99 ms "
        "| off CPU ms/req | on CPU ms/req | non-2xx |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = list(dict.fromkeys((r.concurrency, r.target) for _, r in results))
    worst = 1.0
    bad = 0
    for concurrency, target in keys:
        runs = {
            mode: [
                r
                for m, r in results
                if m == mode and (r.concurrency, r.target) == (concurrency, target)
            ]
            for mode in ("off", "on")
        }

        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        rps = {m: mean([r.run.rps for r in rs]) for m, rs in runs.items()}
        p99 = {m: mean([r.run.p99_us / 1000 for r in rs]) for m, rs in runs.items()}
        cpu = {m: mean([r.server_cpu * 10 / r.run.rps for r in rs]) for m, rs in runs.items()}
        errors = sum(r.run.status_errors + r.run.socket_errors for rs in runs.values() for r in rs)
        bad += errors
        ratio = rps["on"] / rps["off"]
        if concurrency == 32:
            worst = min(worst, ratio)
        lines.append(
            f"| {concurrency} | `{target}` | {rps['off']:.1f} | {rps['on']:.1f} | {ratio:.3f} "
            f"| {p99['off']:.2f} | {p99['on']:.2f} | {cpu['off']:.3f} | {cpu['on']:.3f} "
            f"| {errors} |"
        )
    lines += [
        "",
        f"Lowest on/off throughput at 32 connections: {worst:.3f} (overhead {1 - worst:.1%}).",
    ]
    return "\n".join(lines) + "\n", bad == 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = require_wrk()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    head = ["## Rate limiting and metrics, off against on", "", *machine_lines(wrk)]
    head += [
        f"- load average at the start: {load} (2 cores, shared with other work)",
        f"- data: 1 user, {args.conversations} conversations × {args.messages} messages; "
        f"wrk -t 1, {args.duration} s runs after {args.warmup} s warm-up, order off, on, on, off",
        "- servers: two `parley serve` (one Hypercorn process each, uvloop) on one PostgreSQL "
        "database, hypercorn.toml (no access log), LOG_LEVEL=WARNING; off: "
        + ", ".join(f"{k}={v!r}" for k, v in OFF.items())
        + "; on: "
        + ", ".join(f"{k}={v!r}" for k, v in ON.items())
        + ", sign-in throttles at their defaults",
        "- CPU ms/req: server CPU over the run / requests",
    ]
    with (
        tempfile.TemporaryDirectory(prefix="parley-operate-") as tmp,
        fresh_database(args.pg, args.admin_db) as url,
    ):
        results = bench(args, wrk, Path(tmp), url)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text, ok = report([*head, f"- load average at the end: {load}"], results)
    text += "\n" + per_call_costs()
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text + "\n")
    return 0 if ok else 1


def per_call_costs() -> str:
    """What "on" adds per request and per message, timed in this process (µs per call): less
    sensitive to the machine's load than throughput, which other work on 2 cores moves by
    more than 10 % between two identical runs."""
    import timeit
    import uuid

    import anyio

    from actors.observer import ReplyReport
    from chat.metrics import Metrics
    from chat.throttle import Rules, Throttle

    metrics = Metrics("local")
    route = "/api/v1/chat/conversations/<uuid:conversation_id>/messages"
    report_ = ReplyReport("complete", "", 1.5, 0.05, 120)
    n = 100_000

    def per_call(stmt: object, number: int = n) -> float:
        return min(timeit.repeat(stmt, number=number, repeat=3)) / number * 1e6  # type: ignore[arg-type]

    rows = [
        (
            "request counted (counter + histogram)",
            per_call(lambda: metrics.request("POST", route, 201, 0.004)),
        ),
        ("reply ended (histograms, tokens)", per_call(lambda: metrics.reply_ended(report_))),
        ("database statement timed", per_call(lambda: metrics.query(0.0007))),
    ]
    user, conversation = uuid.uuid4(), uuid.uuid4()
    rules = Rules.from_settings(
        _settings(ON["USER_MESSAGE_RATE"], int(ON["USER_CONCURRENT_REPLIES"]))
    )
    messages = 20_000

    async def checks() -> float:
        throttle = Throttle(rules)
        started = time.perf_counter()
        for _ in range(messages):
            release = throttle.take_reply_slot(user)
            await throttle.check_message(user, conversation)
            if release is not None:
                release()
        return (time.perf_counter() - started) / messages * 1e6

    rows.append(("message budget + reply slot (memory, 2 windows)", anyio.run(checks)))
    lines = ['| what "on" adds | µs per call |', "|---|---:|"]
    lines += [f"| {name} | {us:.1f} |" for name, us in rows]
    return "\n".join(lines) + "\n"


def _settings(message_rate: str, concurrent: int) -> Settings:
    from chat.settings import Settings

    return Settings(
        jwt_secret="x" * 48, user_message_rate=message_rate, user_concurrent_replies=concurrent
    )


if __name__ == "__main__":
    sys.exit(main())
