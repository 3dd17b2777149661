"""Any OpenAI-compatible chat-completions endpoint, streamed, with usage, timeout and retries."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import openai
from openai import AsyncOpenAI

from actors.provider import ProviderError, ReplyInfo, ReplyPart, ReplyRequest, TextDelta

SYSTEM_PROMPT = (
    "You are Parley, a friendly and concise customer-support assistant. Answer the customer's "
    "question clearly. If you cannot help, offer to open a support ticket."
)


def _error(error: openai.APIError) -> ProviderError:
    """The model's failure as a readable error for the reply and its `error` event.

    The client wraps transport failures too (a cut stream is an `APIConnectionError`, a read
    past the timeout an `APITimeoutError`), so `openai.APIError` covers every model failure.
    """
    if isinstance(error, openai.RateLimitError):
        return ProviderError("the model is rate limited, please try again shortly", "rate_limited")
    if isinstance(error, openai.APITimeoutError):
        return ProviderError("the model did not answer in time", "timeout")
    if isinstance(error, openai.APIStatusError):
        return ProviderError(f"the model answered with HTTP {error.status_code}", "upstream_error")
    if isinstance(error, openai.APIConnectionError):
        return ProviderError("the connection to the model was lost", "upstream_unreachable")
    # An `error` object sent in the middle of the stream.
    return ProviderError(f"the model reported an error: {error.message}", "upstream_error")


class OpenAIProvider:
    """Implements `actors.provider.Provider` with the official `openai` client."""

    def __init__(
        self, *, base_url: str, api_key: str, model: str, timeout_s: float, max_retries: int
    ) -> None:
        self.model = model
        # The client retries connection errors, 408/409/429 and 5xx before the stream starts;
        # `timeout` bounds each wait for the server, including between streamed chunks.
        self.client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout_s,
            max_retries=max_retries,
        )

    async def close(self) -> None:
        await self.client.close()

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyPart, None]:
        messages: list[Any] = [{"role": "system", "content": SYSTEM_PROMPT}]
        messages += [{"role": t.role, "content": t.content} for t in request.history]
        # Named up front, so even a reply that fails half-way says which model wrote it.
        yield ReplyInfo(model=self.model)
        model = self.model
        try:
            stream = await self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                user=str(request.user_id),
            )
            async with stream:
                async for chunk in stream:
                    model = chunk.model or model
                    if chunk.usage is not None:
                        yield ReplyInfo(
                            prompt_tokens=chunk.usage.prompt_tokens,
                            completion_tokens=chunk.usage.completion_tokens,
                        )
                    for choice in chunk.choices:
                        if choice.delta.content:
                            yield TextDelta(choice.delta.content)
        except openai.APIError as error:
            raise _error(error) from error
        if model != self.model:
            yield ReplyInfo(model=model)
