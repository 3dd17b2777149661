"""A small OpenAI-compatible streaming server (Quart on Hypercorn, in-process) for tests.

`POST /v1/chat/completions` answers according to the request's `model`:

- `normal`: content chunks, then a usage chunk (`choices: []`), then `[DONE]`;
- `error500`, `error429`: that HTTP status with an OpenAI-style JSON error body;
- `cut`: two content chunks, then the connection is dropped mid-body;
- `truncated`: two content chunks, then the body ends cleanly, without a `finish_reason` or
  `[DONE]` (a proxy that cuts streams does this);
- `no_done`: as `normal` but without the closing `[DONE]` (the `finish_reason` is the signal);
- `length`, `content_filter`: as `normal`, but finished for that reason (cut short);
- `hang`: one content chunk, then nothing until the client disconnects or the server stops;
- `silent`: the response starts (status and headers), then no chunk at all;
- `unauthorized`: 401 whose error message repeats the API key it received, as some servers do.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request

NORMAL_PIECES = ("Hello", ", ", "how can ", "I help?")
CUT_PIECES = ("Partial ", "answer")
HANG_PIECE = "Thinking"
# The model name the server reports in its chunks, for a requested `normal`.
SERVED_MODEL = "normal-2024-01-01"
USAGE = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
# Retry quickly: the openai client honours `retry-after-ms` (a `retry-after: 0` is ignored
# and falls back to its 0.5 s exponential backoff).
RETRY_HEADERS = {"retry-after-ms": "10", "retry-after": "0"}


class CutConnection(Exception):
    """Raised inside a streamed body so that Hypercorn aborts the response."""


@dataclass
class FakeOpenAI:
    base_url: str
    # Every request body received, in order.
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # Set at teardown: a hanging response ends then.
    release: anyio.Event = field(default_factory=anyio.Event)
    # Set once a hanging response has sent its first chunk.
    hanging: anyio.Event = field(default_factory=anyio.Event)
    # Set when a hanging response ends before teardown: the client closed its connection.
    hang_closed: anyio.Event = field(default_factory=anyio.Event)

    def attempts(self, model: str) -> int:
        return sum(1 for body in self.requests if body.get("model") == model)


def _chunk(model: str, content: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {"index": 0, "delta": {"content": content}, "finish_reason": None, "logprobs": None}
        ],
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def _sse(body: AsyncIterator[bytes]) -> Response:
    return Response(body, status=200, content_type="text/event-stream")


def _error(status: int, message: str, kind: str) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=RETRY_HEADERS
    )


def create_app(state: FakeOpenAI) -> Quart:
    app = Quart(__name__)

    @app.get("/health")
    async def health() -> str:
        return "ok"

    @app.post("/v1/chat/completions")
    async def completions() -> Response:
        body: dict[str, Any] = await request.get_json()
        state.requests.append(body)
        state.headers.append(dict(request.headers))
        model = body.get("model")

        if model in ("normal", "no_done", "length", "content_filter"):
            reason = model if model in ("length", "content_filter") else "stop"

            async def normal() -> AsyncIterator[bytes]:
                first = {"role": "assistant", "content": ""}
                yield _chunk(SERVED_MODEL, choices=[{"index": 0, "delta": first}])
                for piece in NORMAL_PIECES:
                    yield _chunk(SERVED_MODEL, piece)
                yield _chunk(
                    SERVED_MODEL,
                    choices=[{"index": 0, "delta": {}, "finish_reason": reason}],
                )
                yield _chunk(SERVED_MODEL, choices=[], usage=USAGE)
                if model == "normal":
                    yield b"data: [DONE]\n\n"

            return _sse(normal())
        if model == "error500":
            return _error(500, "the fake server broke", "server_error")
        if model == "error429":
            return _error(429, "slow down", "rate_limit_exceeded")
        if model == "cut":

            async def cut() -> AsyncIterator[bytes]:
                for piece in CUT_PIECES:
                    yield _chunk("cut", piece)
                raise CutConnection("dropping the connection mid-stream")

            return _sse(cut())
        if model == "truncated":

            async def truncated() -> AsyncIterator[bytes]:
                for piece in CUT_PIECES:
                    yield _chunk("truncated", piece)

            return _sse(truncated())
        if model == "midstream_error":

            async def midstream() -> AsyncIterator[bytes]:
                yield _chunk("midstream_error", "Partial ")
                error = {"error": {"message": "overloaded", "type": "server_error"}}
                yield b"data: " + json.dumps(error).encode() + b"\n\n"

            return _sse(midstream())
        if model == "hang":

            async def hang() -> AsyncIterator[bytes]:
                yield _chunk("hang", HANG_PIECE)
                state.hanging.set()
                try:
                    await state.release.wait()
                finally:
                    # Hypercorn cancels the body when the client disconnects.
                    if not state.release.is_set():
                        state.hang_closed.set()

            return _sse(hang())
        if model == "silent":

            async def silent() -> AsyncIterator[bytes]:
                await state.release.wait()
                yield b""

            return _sse(silent())
        if model == "unauthorized":
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return _error(
                401,
                f"Incorrect API key provided: {key}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
            )
        return _error(404, f"unknown model {model!r}", "invalid_request_error")

    return app


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_until_serving(url: str, deadline_s: float = 5.0) -> None:
    """Connect until the server answers, within a deadline."""
    with anyio.fail_after(deadline_s):
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                try:
                    response = await client.get(url)
                except httpx.TransportError:
                    # Not listening yet: retry shortly (the deadline bounds the whole wait).
                    await anyio.sleep(0.01)
                    continue
                if response.status_code == 200:
                    return


@asynccontextmanager
async def fake_openai_server() -> AsyncIterator[FakeOpenAI]:
    """Serve the fake API on a free port of 127.0.0.1 for the duration of the block."""
    port = free_port()
    state = FakeOpenAI(base_url=f"http://127.0.0.1:{port}/v1")
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 1
    config.accesslog = None
    shutdown = anyio.Event()
    async with anyio.create_task_group() as tg:
        # In its own task: on Python 3.11 `serve` leaves a cancel request on its task.
        run = functools.partial(serve, shutdown_trigger=shutdown.wait)
        tg.start_soon(run, create_app(state), config)
        try:
            await wait_until_serving(f"http://127.0.0.1:{port}/health")
            yield state
        finally:
            state.release.set()
            shutdown.set()
