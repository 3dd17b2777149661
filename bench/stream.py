"""Benchmark SSE streaming (route 7) and actor memory on one server instance.

Streaming mode (default): make a fresh PostgreSQL database (`--database postgresql`, the
default; dropped at the end) or a SQLite file in a temp dir (`--database sqlite`), migrate it,
start `bench/bench_server.py`
(`chat.root.serve` with a provider emitting tokens at a fixed rate, each carrying its emit
time), register and log in a user, then
- time the first `POST /messages` (`Prefer: respond-async`) on a cold actor whose conversation
  has `--history` messages, against the second on the same, now warm, actor;
- for each `--streams N`: open N concurrent streams on route 7, one per new conversation, and
  measure relay delay (provider emit → client read), TTFB, throughput, server RSS and CPU.

Idle mode (`--idle-actors N`): in fresh processes, spawn N actors over a migrated SQLite file
(one message each, answered at once) and report the memory of an idle actor, by RSS and by
tracemalloc, beside the size of its history.

    .venv/bin/python bench/stream.py --streams 10 100 500 1000 --out bench/results.md
    .venv/bin/python bench/stream.py --database sqlite --streams 100
    .venv/bin/python bench/stream.py --idle-actors 10000 --out bench/results.md

Every process started is stopped and the temp dirs removed, whatever happens. The modes
live in `stream_live.py` (with `stream_cold.py`) and `stream_idle.py`, the report in
`stream_report.py`; this file reads the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from stream_idle import idle_mode
from stream_live import stream_mode
from stream_server import raise_open_files


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="*", default=[10, 100, 500, 1000])
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds to spread starts over")
    parser.add_argument(
        "--workers", type=int, default=0, help="load generator processes (0: 1 below 500, else 2)"
    )
    parser.add_argument(
        "--database",
        choices=["postgresql", "sqlite"],
        default="postgresql",
        help="the server's database for the streaming and cold actor parts (idle mode: SQLite)",
    )
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server")
    parser.add_argument("--admin-db", default="test", help="database to connect to for CREATE")
    parser.add_argument("--cold-samples", type=int, default=5, help="0 skips the cold actor")
    parser.add_argument("--history", type=int, default=100, help="messages, cold actor test")
    parser.add_argument("--idle-actors", type=int, default=0, help="run the idle actor mode")
    parser.add_argument("--idle-history", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out", type=Path, help="append the markdown report to this file")
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.rate <= 0 or args.ramp < 0 or args.workers < 0:
        parser.error("--tokens >= 1, --rate > 0, --ramp >= 0 and --workers >= 0")
    if any(n < 1 for n in args.streams) or args.idle_actors < 0:
        parser.error("--streams and --idle-actors must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mode the command line asks for; print the report (and append it to `--out`)."""
    args = parse_args(argv)
    raise_open_files()
    text = idle_mode(args) if args.idle_actors else stream_mode(args)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
