"""`Draft`: the reply being generated, what the provider has said of it so far."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import anyio

from actors.observer import ReplyReport
from actors.provider import ReplyInfo


@dataclass
class Draft:
    """The reply being generated: what the provider has said so far."""

    id: uuid.UUID
    parts: list[str]
    info: dict[str, Any]
    # Set once its terminal event (`complete`, `cancelled` or `error`) is published.
    ended: bool = False
    # When generation started and when its first text came (`anyio.current_time()`).
    started_at: float = 0.0
    first_text_at: float | None = None

    def merge(self, info: ReplyInfo) -> None:
        for name in ("model", "confidence", "prompt_tokens", "completion_tokens"):
            value = getattr(info, name)
            if value is not None:
                self.info[name] = value
        for name in ("entity_references", "entity_links"):
            if getattr(info, name):
                self.info[name] = getattr(info, name)

    def report(self, status: str, code: str) -> ReplyReport:
        """How the reply ended, as the observer is told (read when it ends, not per chunk)."""
        now = anyio.current_time()
        first = self.first_text_at
        tokens = self.info.get("completion_tokens") or len(self.parts)
        return ReplyReport(
            status=status,
            code="" if status == "complete" else code,
            duration_s=now - self.started_at,
            first_token_s=None if first is None else first - self.started_at,
            tokens=int(tokens),
        )
