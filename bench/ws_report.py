"""The report of `bench/ws.py`: idle capacity against the bare baseline, what a socket holds
(tracemalloc by file), and WebSocket streams beside SSE streams of the same run."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from stream_helpers import percentile
from stream_report import StreamRun, bottleneck, figures, machine_lines, settings_line, verdict
from ws_client import IdleResult

TARGET_SOCKETS = 10_000
TARGET_KIB = 30.0


@dataclass
class IdleRun:
    """What one run of N idle sockets measured (`app`: parley, bare or parley-traced)."""

    app: str
    sockets: int
    users: int
    results: list[IdleResult]
    rss_before_kib: int
    rss_after_kib: int
    server_cpu_s: float
    server_fds: int
    breakdown: list[Any] = field(default_factory=list)

    @property
    def opened(self) -> int:
        return sum(r.opened for r in self.results)

    @property
    def answered(self) -> int:
        return sum(r.answered for r in self.results)

    @property
    def errors(self) -> list[str]:
        return [e for r in self.results for e in r.errors]

    @property
    def per_socket_b(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) * 1024 / max(1, self.opened)

    @property
    def connect_s(self) -> float:
        begin = min(r.first_start_ns for r in self.results)
        end = max(r.last_open_ns for r in self.results)
        return max(1e-9, (end - begin) / 1e9)

    def handshake_ms(self, share: float) -> float:
        ordered = sorted(t for r in self.results for t in r.handshakes_ns)
        return percentile(ordered, share) / 1e6


def idle_table(runs: list[IdleRun]) -> list[str]:
    lines = [
        "| server | sockets | users | opened / answered a ping | failed | handshakes/s "
        "| handshake p50 / p99 ms | server CPU s (connect) | client CPU s | server fds "
        "| RSS before / after MiB | RSS per socket KiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        client_cpu = sum(r.cpu_s for r in run.results)
        lines.append(
            f"| {run.app} | {run.sockets} | {run.users} | {run.opened} / {run.answered} "
            f"| {run.sockets - run.opened} | {run.opened / run.connect_s:.0f} "
            f"| {run.handshake_ms(0.5):.1f} / {run.handshake_ms(0.99):.1f} "
            f"| {run.server_cpu_s:.1f} | {client_cpu:.1f} | {run.server_fds} "
            f"| {run.rss_before_kib / 1024:.1f} / {run.rss_after_kib / 1024:.1f} "
            f"| {run.per_socket_b / 1024:.1f} |"
        )
    return lines


def breakdown_lines(runs: list[IdleRun]) -> list[str]:
    traced = [run for run in runs if run.breakdown]
    if not traced:
        return []
    names = [name for name, _ in traced[0].breakdown[:-1]]
    for run in traced[1:]:
        names += [name for name, _ in run.breakdown[:-1] if name not in names]
    sizes = [dict(run.breakdown) for run in traced]
    head = " | ".join(f"{run.app.removesuffix('-traced')}, {run.opened} sockets" for run in traced)
    lines = [
        "",
        "Under tracemalloc (a separate server per column, one frame per allocation): the traced "
        "Python heap's growth per socket in bytes, by file, between the two snapshots "
        "(each after a full collection); tracemalloc's own overhead is not in these bytes.",
        "",
        f"| where allocated | {head} |",
        "|---|" + "---:|" * len(traced),
    ]
    for name in [*names, "(all files)"]:
        cells = " | ".join(f"{size[name]:.0f}" if name in size else "" for size in sizes)
        lines.append(f"| `{name}` | {cells} |" if name[0] != "(" else f"| {name} | {cells} |")
    return lines


def stream_table(pairs: list[tuple[StreamRun, StreamRun]], args: argparse.Namespace) -> list[str]:
    lines = [
        "| streams | door | tokens received / expected | failed | relay p50 / p99 / max ms "
        "| provider lateness p99 ms | TTFB p50 / p99 ms | server CPU % mean / peak "
        "| load gen CPU % (workers) | server RSS idle → peak MiB | bottleneck |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for sse, ws in pairs:
        for door, run in (("SSE", sse), ("WS", ws)):
            f = figures(run, args)
            lines.append(
                f"| {run.streams} | {door} | {f.received} / {f.expected} | {f.failed} "
                f"| {f.relay[0]:.2f} / {f.relay[1]:.2f} / {f.relay[2]:.1f} | {f.lag[1]:.2f} "
                f"| {f.ttfb[0]:.1f} / {f.ttfb[1]:.1f} "
                f"| {run.server_cpu_pct:.0f} / {run.server_cpu_peak_pct:.0f} "
                f"| {run.loadgen_cpu_pct:.0f} ({run.workers}) "
                f"| {run.rss_idle_kib / 1024:.1f} → {run.rss_peak_kib / 1024:.1f} "
                f"| {bottleneck(run)} |"
            )
        s, w = figures(sse, args).relay, figures(ws, args).relay
        lines.append(
            f"| {sse.streams} | WS / SSE | | | {w[0] / s[0]:.2f} / {w[1] / s[1]:.2f} / "
            f"{w[2] / s[2]:.2f} | | | | | | |"
        )
    return lines


def verdicts(idle: list[IdleRun], pairs: list[tuple[StreamRun, StreamRun]], args: Any) -> list[str]:
    at_target = [r for r in idle if r.app == "parley" and r.sockets >= TARGET_SOCKETS]
    capacity = None
    if at_target:
        run = at_target[-1]
        capacity = run.opened >= TARGET_SOCKETS and run.per_socket_b / 1024 <= TARGET_KIB
        worst = f" ({run.opened} open, {run.per_socket_b / 1024:.1f} KiB each)"
    lines = [
        f"- target {TARGET_SOCKETS} idle sockets at ≤ {TARGET_KIB:.0f} KiB each: "
        f"{verdict(capacity)}{worst if at_target else ''}"
    ]
    for sse, ws in pairs:
        s, w = figures(sse, args).relay, figures(ws, args).relay
        ok = w[0] <= s[0] and w[1] <= s[1]
        lines.append(
            f"- target WS relay no worse than SSE at {sse.streams} streams: {verdict(ok)} "
            f"(p50 {w[0]:.2f} vs {s[0]:.2f} ms, p99 {w[1]:.2f} vs {s[1]:.2f} ms)"
        )
    return lines


def report(
    args: argparse.Namespace,
    extra: dict[str, str],
    idle: list[IdleRun],
    pairs: list[tuple[StreamRun, StreamRun]],
) -> str:
    """The markdown report."""
    lines = [
        "### WebSocket (`bench/ws.py`)",
        "",
        *machine_lines(),
        "- server: `bench/ws_server.py --app parley`, i.e. `bench/bench_server.py` (`chat.root."
        "serve`, one Hypercorn process, uvloop, hypercorn.toml without the access log) with the "
        f"paced provider, on {args.database}; a fresh server per row; open-files limit raised "
        "to the hard limit in the server and the clients",
        "- baseline: `bench/ws_server.py --app bare`, a Quart app whose `/ws/chat` accepts "
        "anyone and echoes, served by the same Hypercorn config and loop",
        settings_line(extra),
        f"- idle: `websockets` asyncio clients on uvloop, {args.idle_workers} processes, "
        f"{args.in_flight} handshakes in flight each, token in the query string; "
        f"{args.per_user} sockets per user at most; each socket answers one ping; RSS per "
        "socket: (VmRSS 2 s after the last answer − VmRSS before, after 20 warm-up sockets) / "
        "sockets opened; handshakes/s: sockets / (last open − first start)",
        f"- streams: {args.tokens} tokens per reply at {args.rate:g} tokens/s, starts spread "
        f"over {args.ramp:g} s; WS: one user, socket and conversation per stream, "
        "`send_message` then every frame until `message_response`; SSE: `bench/stream.py`'s "
        "run (one user, a conversation per stream); relay: provider emit → client read, "
        "by the same parser",
        "",
        "#### Idle sockets",
        "",
        *idle_table([r for r in idle if not r.breakdown]),
        *breakdown_lines(idle),
    ]
    errors = [(r.app, r.sockets, e) for r in idle for e in r.errors[:3]]
    if errors:
        lines += ["", "Failures (first three per run):", ""]
        lines += [f"- {app} {n}: {e}" for app, n, e in errors]
    if pairs:
        lines += ["", "#### Streams, WS beside SSE", "", *stream_table(pairs, args)]
        stream_errors = [
            (ws.streams, door, r.error)
            for sse, ws in pairs
            for door, run in (("SSE", sse), ("WS", ws))
            for r in run.results
            if r.error
        ]
        if stream_errors:
            lines += ["", f"Failed streams: {len(stream_errors)}; the first three:", ""]
            lines += [f"- {n} {door}: `{e}`" for n, door, e in stream_errors[:3]]
    lines += ["", *verdicts(idle, pairs, args)]
    return "\n".join(lines)
