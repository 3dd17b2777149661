"""A scripted OpenAI-compatible model: `python -m tests.tools.scripted_openai PORT`.

Stateless: the last user message scripts the model. `TOOLS:` followed by a JSON list of
rounds, each a list of `[name, arguments]` calls, makes the model ask for those calls, one
round per completion (while the request offers tools); `loop` asks for a knowledge-base
search in every round it can, `stubborn` in every round, offered tools or not. After the
calls (or when no tools are offered) it answers with a text that quotes each tool result:
`Ticket #N is open.`, `A tool failed: …` or `Found: …`.
Text and tool calls are streamed the way OpenAI does: the arguments in pieces, by index
(several calls of one round interleaved).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request

MODEL = "scripted-1"
LOOP = "loop"
# Asks for a tool in every completion, offered or not (a model that ignores the rules).
STUBBORN = "stubborn"
NO_TOOLS_LEFT = "No tools left."


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def _usage() -> bytes:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    body = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [],
        "usage": usage,
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def _since_question(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The last user message and every message after it."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return str(messages[last]["content"]), messages[last + 1 :]


def _calls_for(question: str, rounds_done: int) -> list[list[Any]]:
    if question.strip() in (LOOP, STUBBORN):
        return [["parley__search_knowledge_base", {"query": "refund"}]]
    if question.startswith("TOOLS:"):
        rounds: list[list[list[Any]]] = json.loads(question.removeprefix("TOOLS:"))
        return rounds[rounds_done] if rounds_done < len(rounds) else []
    return []


def _describe(result: str) -> str:
    if result.startswith("Error"):
        return f"A tool failed: {result}"
    try:
        data = json.loads(result)
    except ValueError:
        return f"Found: {result[:100]}"
    if isinstance(data, dict) and "number" in data and "subject" in data:
        return f"Ticket #{data['number']} is open."
    return f"Found: {json.dumps(data)[:300]}"


async def _answer(body: dict[str, Any]) -> AsyncIterator[bytes]:
    question, after = _since_question(body["messages"])
    rounds_done = sum(1 for m in after if m["role"] == "assistant" and m.get("tool_calls"))
    offered = body.get("tools") or question.strip() == STUBBORN
    calls = _calls_for(question, rounds_done) if offered else []
    yield _chunk({"role": "assistant", "content": ""})
    if calls:
        yield _chunk({"content": "Let me check. "})
        # Several calls interleave: every head first, then each one's first half of the
        # arguments, then the second halves, so only their `index` puts them back together.
        texts = [json.dumps(arguments) for _, arguments in calls]
        for index, (name, _) in enumerate(calls):
            head = {"index": index, "id": f"call_{rounds_done}_{index}", "type": "function"}
            yield _chunk({"tool_calls": [head | {"function": {"name": name, "arguments": ""}}]})
        for part in (0, 1):
            for index, text in enumerate(texts):
                half = len(text) // 2
                piece = text[:half] if part == 0 else text[half:]
                yield _chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield _chunk({}, "tool_calls")
    else:
        results = [str(m["content"]) for m in after if m["role"] == "tool"]
        if question.strip() == LOOP and not body.get("tools"):
            results.append("")
        text = " ".join(_describe(r) if r else NO_TOOLS_LEFT for r in results) or "Hello."
        for word in text.split(" "):
            yield _chunk({"content": word + " "})
        yield _chunk({}, "stop")
    yield _usage()
    yield b"data: [DONE]\n\n"


def create_app() -> Quart:
    app = Quart(__name__)

    @app.get("/health")
    async def health() -> str:
        return "ok"

    @app.post("/v1/chat/completions")
    async def completions() -> Response:
        body: dict[str, Any] = await request.get_json()
        return Response(_answer(body), status=200, content_type="text/event-stream")

    return app


async def main(port: int) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    await serve(create_app(), config)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
