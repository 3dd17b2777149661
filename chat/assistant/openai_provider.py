"""Any OpenAI-compatible chat-completions endpoint, streamed, with usage, timeouts and retries."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk

from actors.provider import ProviderError, ReplyInfo, ReplyPart, ReplyRequest, TextDelta
from chat.assistant.tool_loop import TOOLS_PROMPT, References, Turn, run_calls, tool_functions
from chat.tools.service import ToolService

# Finish reasons that end a reply before its end, and what the stored reply says of them.
CUT_SHORT = {
    "length": "the model stopped at its length limit; the reply is cut short",
    "content_filter": "the model's content filter stopped the reply",
}
SYSTEM_PROMPT = (
    "You are Parley, a friendly and concise customer-support assistant. Answer the customer's "
    "question clearly. If you cannot help, offer to open a support ticket."
)
# The upstream's own words are kept to this many characters in an error message.
MAX_UPSTREAM_TEXT = 200
# Keys and tokens that an upstream may echo back in its error text.
_SECRET_PATTERNS = (
    (re.compile(r"\bsk-[\w*.\-]+"), "sk-***"),
    # A token has a digit or is long; prose such as "bearer authentication" is left alone.
    (
        re.compile(r"\bBearer\s+(?:(?=[\w\-.~+/]*\d)[\w\-.~+/]+|[\w\-.~+/]{20,})=*", re.I),
        "Bearer ***",
    ),
)
# A configured key shorter than this is not searched for (it would blank ordinary words).
_MIN_KEY_TO_REDACT = 6


def host_of(base_url: str) -> str:
    """`scheme://host[:port]` of a URL: no credentials, path or query, safe to log and show."""
    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else f"{host}{port}"


def redact(text: str, api_key: str = "") -> str:
    """`text` on one line, bounded, with API keys and bearer tokens (and `api_key`) masked."""
    if len(api_key) >= _MIN_KEY_TO_REDACT:
        text = text.replace(api_key, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    if len(text) > MAX_UPSTREAM_TEXT:
        text = text[: MAX_UPSTREAM_TEXT - 1].rstrip() + "…"
    return text


def _upstream_text(error: openai.APIError) -> str:
    """What the upstream itself said: the `message` of its error body, if it sent one."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    if isinstance(body, str):
        return body
    return "" if isinstance(error, openai.APIStatusError) else error.message


def _is_connect_failure(error: BaseException) -> bool:
    """Whether a socket-level error (refused, unreachable, unknown host) is behind `error`."""
    seen: BaseException | None = error
    # Bounded: a chain of causes can loop.
    for _ in range(20):
        if seen is None:
            break
        if isinstance(seen, OSError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class _ReplyState:
    """What one reply has seen so far, across its rounds of completions."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    said_text: bool = False


class OpenAIProvider:
    """Implements `actors.provider.Provider` with the official `openai` client.

    A reply is complete only when the model says so with a `finish_reason`: the client raises
    nothing when a stream just ends (a proxy cut it), so that is `upstream_truncated`.
    `timeout_s` bounds each wait for the model until its first chunk; after that `stall_s`
    bounds the silence between chunks (`upstream_stalled`).
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float,
        max_retries: int,
        stall_s: float = 20.0,
        tools: ToolService | None = None,
        max_tool_rounds: int = 5,
    ) -> None:
        self.model = model
        self.tools = tools
        self.max_tool_rounds = max_tool_rounds
        self.host = host_of(base_url)
        self.timeout_s = timeout_s
        self.stall_s = stall_s
        self._api_key = api_key
        # The client retries connection errors, 408/409/429 and 5xx before the stream starts.
        # Its read timeout is not the stall bound: that is ours, per chunk, below.
        self.client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=openai.Timeout(timeout_s, read=max(timeout_s, stall_s)),
            max_retries=max_retries,
        )

    def describe(self) -> dict[str, str]:
        """What readiness reports about the provider (no key, no path of the base URL)."""
        return {"provider": "openai", "model": self.model, "base_url": self.host}

    async def close(self) -> None:
        await self.client.close()

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyPart, None]:
        # Named up front, so even a reply that fails half-way says which model wrote it.
        yield ReplyInfo(model=self.model)
        functions = tool_functions(await self.tools.specs()) if self.tools is not None else []
        prompt = SYSTEM_PROMPT + (TOOLS_PROMPT if functions else "")
        messages: list[Any] = [{"role": "system", "content": prompt}]
        messages += [{"role": t.role, "content": t.content} for t in request.history]
        state = _ReplyState(model=self.model)
        references = References()
        # Each round is one completion; while tools are offered (at most `max_tool_rounds`
        # rounds of calls) the model may answer with calls, whose results start the next.
        for round_number in range(self.max_tool_rounds + 1):
            offered = functions if round_number < self.max_tool_rounds else []
            turn = Turn()
            async for part in self._complete(messages, offered, request, turn, state):
                yield part
            if not turn.calls:
                break
            if not functions or self.tools is None:
                raise ProviderError("the model asked for a tool, but none was offered")
            if not offered:
                raise ProviderError(
                    f"the model asked for tools after {self.max_tool_rounds} rounds of calls",
                    "tool_rounds_exceeded",
                )
            async for part in run_calls(self.tools, turn, request, messages, references):
                yield part
        if state.model != self.model:
            yield ReplyInfo(model=state.model)

    async def _complete(
        self,
        messages: list[Any],
        functions: list[dict[str, Any]],
        request: ReplyRequest,
        turn: Turn,
        state: _ReplyState,
    ) -> AsyncGenerator[ReplyPart, None]:
        """One streamed completion: its text as it comes, its tool calls into `turn`."""
        extra: dict[str, Any] = {"tools": functions} if functions else {}
        try:
            stream = await self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                user=str(request.user_id),
                **extra,
            )
        except openai.APIError as error:
            raise self._start_error(error) from error
        finished: str | None = None
        started = False
        # Text after an earlier round's text and tool calls starts a paragraph of its own.
        separate = state.said_text
        try:
            async with stream:
                while True:
                    chunk = await self._next_chunk(stream, started)
                    if chunk is None:
                        break
                    started = True
                    state.model = chunk.model or state.model
                    if chunk.usage is not None:
                        # Summed over the rounds: the reply cost all of them.
                        state.prompt_tokens += chunk.usage.prompt_tokens
                        state.completion_tokens += chunk.usage.completion_tokens
                        yield ReplyInfo(
                            prompt_tokens=state.prompt_tokens,
                            completion_tokens=state.completion_tokens,
                        )
                    for choice in chunk.choices:
                        if choice.delta.content:
                            text = choice.delta.content
                            if separate:
                                text, separate = "\n\n" + text.lstrip(), False
                            turn.text.append(text)
                            state.said_text = True
                            yield TextDelta(text)
                        if choice.delta.tool_calls:
                            turn.add_calls(choice.delta.tool_calls)
                        finished = finished or choice.finish_reason
        except openai.APIError as error:
            raise self._stream_error(error, started) from error
        if not finished:
            raise ProviderError(
                "the model's reply ended before it was finished", "upstream_truncated"
            )
        if finished in CUT_SHORT:
            # The model stopped on its own limit or filter: a half answer, not a complete one.
            raise ProviderError(CUT_SHORT[finished], f"upstream_{finished}")

    async def _next_chunk(
        self, stream: openai.AsyncStream[ChatCompletionChunk], started: bool
    ) -> ChatCompletionChunk | None:
        """The next chunk within its deadline, `None` at the end of the stream.

        On a timeout the SDK's read is cancelled; leaving `async with stream` closes the
        response, so a stalled connection is not left open.
        """
        deadline = self.stall_s if started else self.timeout_s
        try:
            with anyio.fail_after(deadline):
                return await stream.__anext__()
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if started:
                raise ProviderError(
                    f"the model stopped sending for more than {deadline:g} s", "upstream_stalled"
                ) from None
            raise ProviderError(
                f"the model did not start answering within {deadline:g} s", "timeout"
            ) from None

    def _said(self, error: openai.APIError) -> str:
        text = redact(_upstream_text(error), self._api_key)
        return f": {text}" if text else ""

    def _start_error(self, error: openai.APIError) -> ProviderError:
        """A failure before the reply's first chunk (after the client's retries)."""
        if isinstance(error, openai.RateLimitError):
            return ProviderError(
                f"the model is rate limited, please try again shortly{self._said(error)}",
                "rate_limited",
            )
        if isinstance(error, openai.APITimeoutError):
            return ProviderError(f"the model at {self.host} did not answer in time", "timeout")
        if isinstance(error, openai.APIStatusError):
            return ProviderError(
                f"the model answered with HTTP {error.status_code}{self._said(error)}",
                "upstream_error",
            )
        if isinstance(error, openai.APIConnectionError):
            if _is_connect_failure(error):
                message = f"could not connect to the model at {self.host}"
            else:
                message = f"the model at {self.host} closed the connection without answering"
            return ProviderError(message, "upstream_unreachable")
        return ProviderError(f"the model reported an error{self._said(error)}", "upstream_error")

    def _stream_error(self, error: openai.APIError, started: bool) -> ProviderError:
        """A failure once the response began: the actor keeps the partial text."""
        if isinstance(error, openai.APITimeoutError):
            if not started:
                return ProviderError(f"the model at {self.host} did not answer in time", "timeout")
            return ProviderError(
                f"the model stopped sending for more than {self.stall_s:g} s", "upstream_stalled"
            )
        if isinstance(error, openai.APIConnectionError):
            return ProviderError("the connection to the model was lost", "upstream_truncated")
        # An `error` object sent in the middle of the stream.
        return ProviderError(f"the model reported an error{self._said(error)}", "upstream_error")
