"""The report of `bench/stream.py`: figures of each run of N streams, their markdown tables
and targets, and the lines every report starts with (machine, command, settings)."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rest import cpu_model
from stream_cold import ColdSample, cold_table
from stream_helpers import NS, PeakRss, Span, StreamResult, percentile
from stream_server import SERVER_SETTINGS

BUSY_CPU_PCT = 90.0
TARGET_RELAY_P99_MS = 10.0
TARGET_RELAY_AT = 500
TARGET_ADDED_TTFB_MS = 10.0


# --- the lines every report starts with ---------------------------------------------------


def machine_lines() -> list[str]:
    """The machine, the command and the load average, as report lines."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- machine: nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, "
        f"kernel {platform.release()}, python {platform.python_version()}",
        f"- command: `{shlex.join([sys.executable, *sys.argv])}`",
        f"- load average when the report was written: {load} "
        "(other work on the machine would skew CPU-bound figures)",
    ]


def settings_line(extra: dict[str, str]) -> str:
    """The server's settings fixed by the benchmark (`extra` on top), as a report line."""
    values = {**SERVER_SETTINGS, **extra}
    listed = ", ".join(f"{k}={v}" for k, v in values.items())
    return f"- settings: {listed}, JWT_SECRET random (48 characters); all others default"


def verdict(ok: bool | None) -> str:
    """A target's verdict: met, not met, or not measured (`None`)."""
    return "not measured" if ok is None else ("met" if ok else "**NOT met**")


# --- streams: figures ---------------------------------------------------------------------


@dataclass
class StreamRun:
    """What one run of N concurrent streams measured."""

    streams: int
    workers: int
    results: list[StreamResult]
    wall_s: float
    server_cpu_pct: float
    loadgen_cpu_pct: float
    loadgen_max_worker_pct: float
    machine_cpu_pct: float
    rss_idle_kib: int
    rss_peak_kib: int
    server_cpu_peak_pct: float
    server_busy_s: int


def stream_run(
    streams: int,
    workers: int,
    results: list[StreamResult],
    span: Span,
    worker_cpu_s: Sequence[float],
    rss_idle_kib: int,
    peak: PeakRss,
) -> StreamRun:
    """A run's figures: `worker_cpu_s` is each load generator's CPU seconds over `span`,
    `peak` the server's sampler over it."""
    per_worker = [cpu / span.wall_s * 100 for cpu in worker_cpu_s]
    return StreamRun(
        streams=streams,
        workers=workers,
        results=results,
        wall_s=span.wall_s,
        server_cpu_pct=span.server_cpu_pct,
        loadgen_cpu_pct=sum(per_worker),
        loadgen_max_worker_pct=max(per_worker),
        machine_cpu_pct=span.machine_cpu_pct,
        rss_idle_kib=rss_idle_kib,
        rss_peak_kib=peak.peak_kib,
        server_cpu_peak_pct=peak.peak_cpu_pct,
        server_busy_s=peak.busy_windows,
    )


def failed(result: StreamResult, tokens: int) -> bool:
    """Whether a stream fell short: an error, no complete event, or tokens missing."""
    return bool(result.error) or not result.complete or result.tokens != tokens


def failures(run: StreamRun, tokens: int) -> int:
    """How many of the run's streams failed."""
    return sum(1 for r in run.results if failed(r, tokens))


def ms(ns: float) -> float:
    return ns / 1e6


def spread(values: list[int]) -> tuple[float, float, float]:
    """p50, p99 and max in ms."""
    ordered = sorted(values)
    if not ordered:
        return 0.0, 0.0, 0.0
    return ms(percentile(ordered, 0.5)), ms(percentile(ordered, 0.99)), ms(ordered[-1])


def steady_rate(results: list[StreamResult]) -> float:
    """Tokens/s received while every stream was streaming (0 if that window is under 1 s)."""
    good = [r for r in results if r.tokens]
    if not good:
        return 0.0
    begin = max(r.first_chunk_ns for r in good)
    end = min(r.last_chunk_ns for r in good)
    if end - begin < NS:
        return 0.0
    count = sum(1 for r in good for t in r.received_ns if begin <= t <= end)
    return count / ((end - begin) / NS)


def overall_rate(results: list[StreamResult]) -> float:
    received = sum(r.tokens for r in results)
    starts = [r.start_ns for r in results if r.start_ns]
    ends = [r.last_chunk_ns for r in results if r.last_chunk_ns]
    if not starts or not ends:
        return 0.0
    return received / ((max(ends) - min(starts)) / NS)


@dataclass(frozen=True)
class Figures:
    received: int
    expected: int
    failed: int
    overall: float
    steady: float
    offered: float
    relay: tuple[float, float, float]
    lag: tuple[float, float, float]
    ttfb: tuple[float, float, float]
    added: tuple[float, float, float]


def figures(run: StreamRun, args: argparse.Namespace) -> Figures:
    got = [r for r in run.results if r.tokens]
    return Figures(
        received=sum(r.tokens for r in run.results),
        expected=run.streams * args.tokens,
        failed=failures(run, args.tokens),
        overall=overall_rate(run.results),
        steady=steady_rate(run.results),
        offered=run.streams * args.rate,
        relay=spread([d for r in run.results for d in r.delays_ns]),
        lag=spread([d for r in run.results for d in r.lags_ns]),
        ttfb=spread([r.first_chunk_ns - r.start_ns for r in got]),
        added=spread([r.first_chunk_ns - r.first_emit_ns for r in got]),
    )


# --- streams: tables ----------------------------------------------------------------------


def latency_table(runs: list[StreamRun], args: argparse.Namespace) -> list[str]:
    lines = [
        "| streams | tokens received / expected | failed streams | tokens/s overall "
        "| tokens/s all streaming (offered) | relay p50 / p99 / max ms "
        "| provider lateness p99 / max ms | TTFB p50 / p99 ms | added TTFB p50 / p99 / max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        f = figures(run, args)
        steady = f"{f.steady:.0f}" if f.steady else "n/a"
        lines.append(
            f"| {run.streams} | {f.received} / {f.expected} | {f.failed} | {f.overall:.0f} "
            f"| {steady} ({f.offered:.0f}) "
            f"| {f.relay[0]:.2f} / {f.relay[1]:.2f} / {f.relay[2]:.1f} "
            f"| {f.lag[1]:.2f} / {f.lag[2]:.1f} | {f.ttfb[0]:.1f} / {f.ttfb[1]:.1f} "
            f"| {f.added[0]:.2f} / {f.added[1]:.2f} / {f.added[2]:.1f} |"
        )
    return lines


def bottleneck(run: StreamRun) -> str:
    found = []
    if run.server_cpu_pct >= BUSY_CPU_PCT:
        found.append("server CPU")
    elif run.server_busy_s >= 2:
        found.append(f"server CPU for {run.server_busy_s} s")
    if run.loadgen_max_worker_pct >= BUSY_CPU_PCT:
        found.append("load generator CPU")
    if run.machine_cpu_pct >= BUSY_CPU_PCT * len(os.sched_getaffinity(0)):
        found.append("all cores busy")
    return ", ".join(found) or "none"


def resource_table(runs: list[StreamRun]) -> list[str]:
    lines = [
        "| streams | load gen workers | server RSS idle MiB | server RSS peak MiB "
        "| per live stream KiB | server CPU % mean / peak (s ≥ 90 %) "
        "| load gen CPU % (busiest worker) "
        "| machine CPU % (rest) | bottleneck |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        per = (run.rss_peak_kib - run.rss_idle_kib) / run.streams
        rest = run.machine_cpu_pct - run.server_cpu_pct - run.loadgen_cpu_pct
        lines.append(
            f"| {run.streams} | {run.workers} | {run.rss_idle_kib / 1024:.1f} "
            f"| {run.rss_peak_kib / 1024:.1f} | {per:.1f} | {run.server_cpu_pct:.0f} / "
            f"{run.server_cpu_peak_pct:.0f} ({run.server_busy_s}) "
            f"| {run.loadgen_cpu_pct:.0f} ({run.loadgen_max_worker_pct:.0f}) "
            f"| {run.machine_cpu_pct:.0f} ({rest:.0f}) | {bottleneck(run)} |"
        )
    return lines


def target_lines(runs: list[StreamRun], args: argparse.Namespace) -> list[str]:
    at = [r for r in runs if r.streams == TARGET_RELAY_AT]
    relay = figures(at[0], args).relay[1] if at else None
    added = [figures(r, args).added[1] for r in runs]
    worst = max(added) if added else None
    relay_ok = None if relay is None else relay < TARGET_RELAY_P99_MS
    added_ok = None if worst is None else worst < TARGET_ADDED_TTFB_MS
    shown = "" if relay is None else f" ({relay:.2f} ms)"
    shown_added = "" if worst is None else f" (worst p99 {worst:.2f} ms)"
    return [
        f"- target p99 relay delay < {TARGET_RELAY_P99_MS:.0f} ms at {TARGET_RELAY_AT} "
        f"streams: {verdict(relay_ok)}{shown}",
        f"- target added TTFB < {TARGET_ADDED_TTFB_MS:.0f} ms (p99, every N): "
        f"{verdict(added_ok)}{shown_added}",
    ]


def failure_lines(runs: list[StreamRun], tokens: int) -> list[str]:
    lines = []
    for run in runs:
        bad = [r for r in run.results if failed(r, tokens)]
        for r in bad[:5]:
            why = r.error or ("no complete event" if not r.complete else "")
            lines.append(f"- {run.streams} streams: {r.tokens}/{tokens} tokens, {why}")
        if len(bad) > 5:
            lines.append(f"- {run.streams} streams: … and {len(bad) - 5} more failed")
    return ["", "**Failed streams:**", *lines] if lines else []


def stream_report(
    runs: list[StreamRun], cold: dict[int, list[ColdSample]], args: argparse.Namespace
) -> str:
    lines = [f"## Streaming benchmark (route 7), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", ""]
    lines += machine_lines()
    lines += [
        "- server: `bench/bench_server.py`, i.e. `chat.root.serve` (one Hypercorn process, "
        "uvloop, hypercorn.toml without the access log) with the benchmark provider; "
        f"{database_line(args)}",
        settings_line({"ACTOR_HISTORY_MESSAGES": str(args.history)}),
        f"- provider: {args.tokens} tokens per reply at {args.rate:g} tokens/s, the first at "
        "once; each token carries its emit time",
        f"- load generator: httpx AsyncClient (HTTP/1.1, a connection per stream) on uvloop; "
        f"stream starts spread evenly over {args.ramp:g} s; one new conversation per stream",
        "- relay delay: provider emit → client read of the chunk event; provider lateness: "
        "emit time behind the provider's schedule (server event loop lag); TTFB: request "
        "start → first chunk read; added TTFB: first token's emit → its read",
        "- per live stream: (peak − idle server RSS) / streams; includes the hub's retained "
        "events of the reply; CPU as % of one core over the run (server peak: its busiest "
        f"1 s window, and how many 1 s windows were at ≥ {BUSY_CPU_PCT:.0f} %); machine CPU: every "
        "process on all cores (/proc/stat), rest: machine minus server and load generator "
        "(the database, the benchmark's parent process, the kernel)",
        "",
    ]
    if runs:
        lines += ["### Streams", "", *latency_table(runs, args), "", *resource_table(runs)]
        lines += ["", *target_lines(runs, args), *failure_lines(runs, args.tokens), ""]
    if cold:
        lines += [
            "### Cold actor",
            "",
            "`POST /messages` with `Prefer: respond-async` (202 once the actor has loaded "
            "its history and stored the message; 1-token reply awaited between the two); "
            "history seeded directly in the database (seq 1..N, `total_messages` set), "
            "first sample of each kind dropped.",
            "",
            *cold_table(cold),
            "",
        ]
    return "\n".join(lines)


def database_line(args: argparse.Namespace) -> str:
    if args.database == "sqlite":
        return "SQLite (WAL) in a temp dir"
    return (
        f"PostgreSQL at {args.pg.rsplit('@', 1)[-1]}, a fresh database per run "
        "(migrated, dropped at the end) on the same machine and cores"
    )
