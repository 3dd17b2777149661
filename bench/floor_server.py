"""The floor: the smallest Quart route streaming the events `bench/cluster.py` measures.

    .venv/bin/python bench/floor_server.py --bind 127.0.0.1:8000 --tokens 200 --rate 20

No actor, no hub, no database, no auth: route 8's path answers an SSE stream at once and, when
route 4's path is posted for the same conversation, the route itself paces the reply's chunk
events (each carrying its emit time, as `PacedProvider`'s do), then a `complete` event, in
Parley's event format. Same Hypercorn settings file and the same garbage-collector tuning as
`parley serve`. What Parley spends per token above this is what its hops cost.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from quart import Quart, Response
from stream_helpers import token_text

ROOT = Path(__file__).resolve().parent.parent
CONVERSATIONS = "/api/v1/chat/conversations"


def event(conversation_id: str, epoch: str, seq: int, body: dict[str, object]) -> bytes:
    data = json.dumps(
        {"type": body.pop("type"), "conversation_id": conversation_id, "epoch": epoch, "seq": seq}
        | body,
        separators=(",", ":"),
    )
    return f"id: {epoch}:{seq}\ndata: {data}\n\n".encode()


def create_app(tokens: int, rate: float) -> Quart:
    app = Quart("floor")
    posted: dict[str, anyio.Event] = {}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(f"{CONVERSATIONS}/<cid>/messages")
    async def post(cid: str) -> tuple[dict[str, str], int]:
        posted.setdefault(cid, anyio.Event()).set()
        return {"status": "accepted"}, 202

    @app.get(f"{CONVERSATIONS}/<cid>/events")
    async def events(cid: str) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            await posted.setdefault(cid, anyio.Event()).wait()
            epoch, message_id = "floor", str(uuid.uuid4())
            start = anyio.current_time()
            for i in range(tokens):
                wait = start + i / rate - anyio.current_time()
                if wait > 0:
                    await anyio.sleep(wait)
                body = {"type": "chunk", "message_id": message_id, "content": token_text()}
                yield event(cid, epoch, i + 1, body)
            yield event(cid, epoch, tokens + 1, {"type": "complete", "message_id": message_id})
            posted.pop(cid, None)

        response = Response(stream(), mimetype="text/event-stream")
        response.timeout = None
        return response

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="host:port")
    parser.add_argument("--config", default=str(ROOT / "hypercorn.toml"))
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second")
    args = parser.parse_args(argv)
    config = HypercornConfig.from_toml(args.config)
    config.bind = [args.bind]
    app = create_app(args.tokens, args.rate)
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
    anyio.run(serve, app, config, backend_options={"use_uvloop": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
