"""A provider whose every reply the test scripts: tokens, pauses, failures, crashes."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import anyio

from actors.provider import ProviderError, ReplyInfo, ReplyPart, ReplyRequest, TextDelta


class ScriptedProvider:
    """Answers `echo: <question>` word by word.

    A question containing `pause` stops after two words until `release` is set (so tests can
    cancel or shut down mid-reply); `crash` raises a bug-like error after one word; `fail`
    raises a `ProviderError` after one word.
    """

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.paused = anyio.Event()
        self.active = 0
        self.max_active = 0
        self.requests: list[ReplyRequest] = []

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyPart, None]:
        self.requests.append(request)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            question = request.history[-1].content
            words = f"echo: {question}".split()
            yield ReplyInfo(model="scripted", confidence=0.5)
            for i, word in enumerate(words):
                await anyio.lowlevel.checkpoint()
                yield TextDelta(word + " ")
                if i == 0 and "crash" in question:
                    raise RuntimeError("provider bug")
                if i == 0 and "fail" in question:
                    raise ProviderError("model unavailable", "upstream_500")
                if i == 1 and "pause" in question:
                    self.paused.set()
                    await self.release.wait()
            yield ReplyInfo(prompt_tokens=len(request.history), completion_tokens=len(words))
        finally:
            self.active -= 1
