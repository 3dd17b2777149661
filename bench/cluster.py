"""Cross-instance relay through the Redis bridge: two Parley instances, producers on A,
route-8 consumers on B, beside single-instance figures of the same run.

    .venv/bin/python bench/cluster.py --streams 100 500 --tokens 100 --rate 20

Per N it runs four shapes, each on fresh conversations: `floor` (`bench/floor_server.py`, the
smallest Quart route streaming the same events: no actor, no database), `off` (one instance
without REDIS_URL), `local` (bridge on, message and stream both on A) and `cross` (bridge on,
message posted to A, stream read from B). The servers are `bench/bench_server.py`
(PostgreSQL, paced provider); Redis is a private `redis-server` on a free port.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from cluster_client import Job, run_shares, split
from rest import free_port
from stream_helpers import NS, percentile, process_cpu_s
from stream_server import (
    Context,
    create_conversations,
    migrated_env,
    paced_server,
    raise_open_files,
    running_bench_server,
    signed_in,
)

REDIS_START_S = 10.0
BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Run:
    """One shape at one N: what the clients saw and what the processes spent."""

    shape: str
    streams: int
    complete: int
    tokens: int
    p50_ms: float
    p99_ms: float
    steady_p99_ms: float
    max_ms: float
    events_per_s: float
    server_cpu_s: dict[str, float]
    steady_us_per_token: float
    client_cpu_s: float
    errors: list[str]

    @property
    def server_us_per_token(self) -> float:
        return sum(self.server_cpu_s.values()) / max(1, self.tokens) * 1e6


@contextmanager
def private_redis(directory: Path) -> Iterator[tuple[str, int, int]]:
    """A `redis-server` on a free loopback port: (URL, port, pid); killed on exit."""
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", str(directory)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + REDIS_START_S
        while time.monotonic() < deadline:
            ping = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True)
            if ping.stdout.strip() == b"PONG":
                break
            time.sleep(0.05)  # not listening yet
        else:
            raise RuntimeError("redis-server did not answer PING")
        yield f"redis://127.0.0.1:{port}/0", port, proc.pid
    finally:
        proc.kill()
        proc.wait()


def worker_pids(url: str, parent: int, count: int) -> dict[str, int]:
    """The pids of `parent`'s `count` workers, once each has answered /readyz on a connection
    of its own (which worker takes a connection is the kernel's choice)."""
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while len(seen) < count and time.monotonic() < deadline:
        with httpx.Client(base_url=url, timeout=10) as client:
            seen.add(int(client.get("/readyz").json()["pid"]))
    if len(seen) < count:
        raise RuntimeError(f"only {len(seen)} of {count} workers answered")
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    assert seen <= {int(c) for c in children}, (seen, children)
    # Named as the two instances of the other shapes, so the report's columns fit.
    return dict(zip(("A", "B", "C", "D"), sorted(seen), strict=False))


def redis_publish_latency(port: int, requests: int) -> list[str]:
    """`redis-benchmark`'s own PUBLISH latency, one client and 50 (a custom-command run:
    7.0's `-t` has no `publish`); one line each: clients, requests/s, p50/p99/max ms."""
    lines = []
    for clients in (1, 50):
        cmd = ["redis-benchmark", "-p", str(port), "-n", str(requests), "-c", str(clients)]
        cmd += ["--csv", "publish", "bench:channel", "x" * 120]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
        row = next(csv.DictReader(io.StringIO(out.stdout)))
        lines.append(
            f"-c {clients}: {float(row['rps']):,.0f} PUBLISH/s, p50 {row['p50_latency_ms']} ms, "
            f"p99 {row['p99_latency_ms']} ms, max {row['max_latency_ms']} ms"
        )
    return lines


def steady_cpu(
    marks: dict[str, int],
    pids: dict[str, int],
    args: argparse.Namespace,
    streams: int,
    out: list[float],
) -> None:
    """Server CPU per token while every reply is mid-stream (no posts, no actor starts):
    from 1 s after the last post to 1 s before the first reply ends."""
    deadline = time.monotonic() + 30.0
    while "post" not in marks and time.monotonic() < deadline:
        time.sleep(0.01)  # the schedule is set once the client processes are up
    if "post" not in marks:
        return
    start = marks["post"] + int((args.ramp + 1.0) * NS)
    end = marks["post"] + int((args.tokens / args.rate - 1.0) * NS)
    if end - start < NS:
        return
    time.sleep(max(0.0, (start - time.time_ns()) / NS))
    before = sum(process_cpu_s(pid) for pid in pids.values())
    time.sleep((end - start) / NS)
    spent = sum(process_cpu_s(pid) for pid in pids.values()) - before
    out.append(spent / (streams * args.rate * (end - start) / NS) * 1e6)


def measure(
    shape: str,
    ctx: Context,
    consumer_url: str,
    pids: dict[str, int],
    streams: int,
    args: argparse.Namespace,
    ids: list[str] | None = None,
) -> Run:
    """N new conversations (or `ids`); N route-8 streams on `consumer_url`; one message each
    to ctx."""
    ids = ids or create_conversations(ctx, streams)
    workers = args.workers or (1 if streams < 500 else 2)
    job = Job(
        consumer_url=consumer_url,
        producer_url=ctx.base_url,
        token=ctx.token,
        conversations=list(enumerate(ids)),
        total=streams,
        connect_ramp_s=args.ramp,
        post_ramp_s=args.ramp,
        interval_ns=round(NS / args.rate),
        deadline_s=args.ramp * 2 + args.tokens / args.rate + 30,
    )
    marks: dict[str, int] = {}

    def schedule(part: Job) -> Job:
        if not marks:
            marks["connect"] = time.time_ns() + NS // 2
            # Subscriptions (and the bridge's channel subscribes) settle before any post.
            marks["post"] = marks["connect"] + int((args.ramp + args.settle) * NS)
        return replace(part, connect_at_ns=marks["connect"], post_at_ns=marks["post"])

    cpu_before = {name: process_cpu_s(pid) for name, pid in pids.items()}
    steady: list[float] = []
    sampler = threading.Thread(target=steady_cpu, args=(marks, pids, args, streams, steady))
    sampler.start()
    shares = run_shares(split(job, workers), schedule)
    sampler.join()
    cpu = {name: process_cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
    results = [s for share in shares for s in share.streams]
    delays = sorted(d for r in results for d in r.delays_ns)
    received = [t for r in results for t in r.received_ns]
    # The relay alone: tokens read while every reply was mid-stream (the steady CPU window).
    calm_from = marks["post"] + int((args.ramp + 1.0) * NS)
    calm_to = marks["post"] + int((args.tokens / args.rate - 1.0) * NS)
    calm = sorted(
        d
        for r in results
        for d, t in zip(r.delays_ns, r.received_ns, strict=True)
        if calm_from <= t <= calm_to
    )
    span = (max(received) - min(received)) / NS if len(received) > 1 else 0.0
    run = Run(
        shape=shape,
        streams=streams,
        complete=sum(r.complete and r.tokens == args.tokens for r in results),
        tokens=len(delays),
        p50_ms=percentile(delays, 0.50) / 1e6,
        p99_ms=percentile(delays, 0.99) / 1e6,
        steady_p99_ms=percentile(calm, 0.99) / 1e6 if calm else 0.0,
        max_ms=(delays[-1] / 1e6) if delays else 0.0,
        events_per_s=len(delays) / span if span else 0.0,
        server_cpu_s=cpu,
        steady_us_per_token=steady[0] if steady else 0.0,
        client_cpu_s=sum(share.cpu_s for share in shares),
        errors=sorted({r.error for r in results if r.error})[:3],
    )
    print(f"  {shape} {streams}: {run.complete}/{streams} complete", file=sys.stderr)
    return run


def cluster_runs(args: argparse.Namespace, tmp: Path) -> tuple[list[Run], list[str]]:
    runs: list[Run] = []
    with paced_server("floor_server.py", tmp, args, tmp / "floor.log", cwd=BENCH) as (url, pid):
        ctx = Context(url, "floor", pid, "")
        for n in args.streams:
            ids = [str(uuid.uuid4()) for _ in range(n)]
            runs.append(measure("floor", ctx, url, {"A": pid}, n, args, ids))
    with (
        migrated_env(args, tmp / "var", {}) as (base_env, database_url),
        ExitStack() as stack,
    ):
        with signed_in(base_env, tmp, args, tmp / "off.log", database_url) as ctx:
            url, pid, token = ctx.base_url, ctx.server_pid, ctx.token
            runs += [measure("off", ctx, url, {"A": pid}, n, args) for n in args.streams]
        redis_url, redis_port, redis_pid = stack.enter_context(private_redis(tmp))
        publish = redis_publish_latency(redis_port, args.redis_requests)
        env = {**base_env, "REDIS_URL": redis_url}
        runs += bridge_runs(args, tmp, env, token, database_url, redis_pid)
        if args.server_workers > 1:
            runs += workers_runs(args, tmp, env, token, database_url, redis_pid)
    return runs, publish


def bridge_runs(
    args: argparse.Namespace,
    tmp: Path,
    env: dict[str, str],
    token: str,
    database_url: str,
    redis_pid: int,
) -> list[Run]:
    """`local` and `cross` on two instances A and B of one cluster."""
    runs: list[Run] = []
    with ExitStack() as stack:
        url_a, pid_a = stack.enter_context(running_bench_server(env, tmp, args, tmp / "a.log"))
        url_b, pid_b = stack.enter_context(running_bench_server(env, tmp, args, tmp / "b.log"))
        ctx = Context(url_a, token, pid_a, database_url)
        pids = {"A": pid_a, "B": pid_b, "redis": redis_pid}
        for n in args.streams:
            runs.append(measure("local", ctx, url_a, pids, n, args))
            runs.append(measure("cross", ctx, url_b, pids, n, args))
    return runs


def workers_runs(
    args: argparse.Namespace,
    tmp: Path,
    env: dict[str, str],
    token: str,
    database_url: str,
    redis_pid: int,
) -> list[Run]:
    """`bench_server.py --workers W` on one port (the bridge between its workers): streams and
    posts both on that port, so the kernel deals each to either worker."""
    log = tmp / "workers.log"
    name = f"workers{args.server_workers}"
    with running_bench_server(env, tmp, args, log, args.server_workers) as (url, parent):
        pids = worker_pids(url, parent, args.server_workers) | {"redis": redis_pid}
        ctx = Context(url, token, parent, database_url)
        return [measure(name, ctx, url, pids, n, args) for n in args.workers_streams]


def ratio(run: Run, base: Run) -> str:
    """Whole-run and steady CPU per token of `run` as multiples of `base`'s."""
    whole = run.server_us_per_token / base.server_us_per_token
    steady = run.steady_us_per_token / base.steady_us_per_token if base.steady_us_per_token else 0
    return f"{whole:.2f}× (steady {steady:.2f}×)"


def report(runs: list[Run], publish: list[str], args: argparse.Namespace) -> str:
    lines = [
        f"{args.tokens} tokens at {args.rate:g}/s per stream; delay = provider emit → client "
        "read (one machine clock); CPU = server processes' user+system over the run "
        "(posts, actor starts and storage included) ÷ tokens delivered; steady = the same "
        "while every reply is mid-stream (1 s after the last post to 1 s before the first "
        "reply ends) ÷ N × rate.",
        "",
        "| shape | N | complete | p50 ms | p99 ms | steady p99 ms | max ms | events/s "
        "| server µs/token | steady µs/token | A / B / redis CPU s | client CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        cpu = " / ".join(f"{r.server_cpu_s.get(k, 0.0):.1f}" for k in ("A", "B", "redis"))
        lines.append(
            f"| {r.shape} | {r.streams} | {r.complete}/{r.streams} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.steady_p99_ms:.1f} | {r.max_ms:.1f} | {r.events_per_s:,.0f} "
            f"| {r.server_us_per_token:.0f} | {r.steady_us_per_token:.0f} | {cpu} "
            f"| {r.client_cpu_s:.1f} |"
        )
    lines += ["", "redis-benchmark PUBLISH, 120-byte message, private redis-server:"]
    lines += [f"- {line}" for line in publish]
    by = {(r.shape, r.streams): r for r in runs}
    for n in args.streams:
        off, floor = by[("off", n)], by[("floor", n)]
        local, cross = by[("local", n)], by[("cross", n)]
        lines.append(
            f"N={n}: CPU/token as multiples of the floor: off {ratio(off, floor)}, "
            f"local {ratio(local, floor)}, cross {ratio(cross, floor)}"
        )
        lines.append(
            f"N={n}: cross p99 − off p99 = {cross.p99_ms - off.p99_ms:+.1f} ms "
            f"(steady {cross.steady_p99_ms - off.steady_p99_ms:+.1f} ms); CPU/token "
            f"cross ÷ off = {ratio(cross, off)}, local ÷ off = {ratio(local, off)}"
        )
    errors = [f"{r.shape} {r.streams}: {e}" for r in runs for e in r.errors]
    return "\n".join(lines + [f"error: {e}" for e in errors]) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds to open / post all")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between the two")
    parser.add_argument("--workers", type=int, default=0, help="client processes (0: auto)")
    parser.add_argument("--redis-requests", type=int, default=100_000)
    parser.add_argument(
        "--server-workers", type=int, default=0, help="also run bench_server --workers W"
    )
    parser.add_argument("--workers-streams", type=int, nargs="+", default=[1000])
    parser.add_argument("--keep", type=Path, help="run in this folder and keep the servers' logs")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--admin-db", default="test")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("redis-server") is None or shutil.which("redis-benchmark") is None:
        print("error: redis-server and redis-benchmark must be installed", file=sys.stderr)
        return 2
    raise_open_files()
    if args.keep:
        # The servers' logs stay for reading (they are shown only when a run fails otherwise).
        args.keep.mkdir(parents=True, exist_ok=True)
        runs, publish = cluster_runs(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="parley-cluster-") as name:
            runs, publish = cluster_runs(args, Path(name))
    print(report(runs, publish, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
