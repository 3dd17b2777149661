"""`parley serve` with the benchmark's paced provider instead of the configured one.

    .venv/bin/python bench/bench_server.py --bind 127.0.0.1:8000 --tokens 200 --rate 20

Settings come from the environment exactly as for `parley serve`; the app is built and
served by `chat.root.serve` (Hypercorn on uvloop) given the benchmark's provider.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
from hypercorn.config import Config as HypercornConfig
from stream_helpers import PacedProvider

from chat.cli import start
from chat.root import serve
from chat.workers import serve_workers

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="host:port")
    parser.add_argument("--config", default=str(ROOT / "hypercorn.toml"))
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second")
    parser.add_argument("--workers", type=int, default=1, help="as `parley serve --workers`")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = start()
    config = HypercornConfig.from_toml(args.config)
    config.bind = [args.bind]
    if args.workers > 1:
        # As `parley serve --workers N`: bound once here, one whole instance per process.
        make = functools.partial(PacedProvider, tokens=args.tokens, rate=args.rate)
        return serve_workers(settings, config, config.create_sockets(), args.workers, make)
    provider = PacedProvider(tokens=args.tokens, rate=args.rate)
    # `serve`'s `provider` replaces the configured one; everything else is as in `parley serve`.
    anyio.run(serve, settings, config, provider, backend_options={"use_uvloop": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
