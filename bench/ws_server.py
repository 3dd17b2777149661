"""The servers `bench/ws.py` measures: Parley (`bench/bench_server.py`'s paced provider) or a
bare Hypercorn + Quart WebSocket echo app, the baseline, served the same way.

    .venv/bin/python bench/ws_server.py --app parley --bind 127.0.0.1:8000 --config hypercorn.toml
    .venv/bin/python bench/ws_server.py --app bare --bind 127.0.0.1:8000 --config hypercorn.toml

With `--trace PREFIX` the process runs under tracemalloc (one frame per allocation) and each
SIGUSR1 writes a snapshot, after a full collection, to `PREFIX.<n>` (n = 1, 2, ...), for the
benchmark to compare by file.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import anyio
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.utils import wrap_app
from quart import Quart, websocket

ROOT = Path(__file__).resolve().parent.parent


def bare_app() -> Quart:
    """A WebSocket that accepts anyone and echoes each frame; `/healthz` for start-up."""
    app = Quart(__name__)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws/chat")
    async def echo() -> None:
        await websocket.accept()
        while True:
            await websocket.send(await websocket.receive())

    return app


async def serve_bare(config: HypercornConfig) -> None:
    """Serve the echo app as `chat.root.serve` serves Parley (uvloop, GC tuned, until SIGTERM)."""
    from chat.root import tune_garbage_collector

    app = bare_app()
    tune_garbage_collector()
    stop = anyio.Event()

    async def on_signal() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stop.set()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(on_signal)
        await worker_serve(
            wrap_app(app, config.wsgi_max_body_size, None), config, shutdown_trigger=stop.wait
        )
        tg.cancel_scope.cancel()


def start_tracing(prefix: str) -> None:
    """Trace allocations; each SIGUSR1 dumps a snapshot to `prefix.<n>`."""
    tracemalloc.start(1)
    taken = [0]

    def dump(signum: int, frame: FrameType | None) -> None:
        gc.collect()
        taken[0] += 1
        # Renamed when complete, so the benchmark never loads half a file.
        tracemalloc.take_snapshot().dump(f"{prefix}.part")
        os.replace(f"{prefix}.part", f"{prefix}.{taken[0]}")

    signal.signal(signal.SIGUSR1, dump)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=["parley", "bare"], required=True)
    parser.add_argument("--bind", required=True, help="host:port")
    parser.add_argument("--config", default=str(ROOT / "hypercorn.toml"))
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second")
    parser.add_argument("--trace", default="", help="snapshot file prefix (tracemalloc)")
    args = parser.parse_args(argv)
    if args.trace:
        start_tracing(args.trace)
    if args.app == "parley":
        import bench_server

        passed = ["--bind", args.bind, "--config", args.config]
        return bench_server.main([*passed, "--tokens", str(args.tokens), "--rate", str(args.rate)])
    config = HypercornConfig.from_toml(args.config)
    config.bind = [args.bind]
    anyio.run(serve_bare, config, backend_options={"use_uvloop": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
