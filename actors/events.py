"""Events of a conversation (contract §4): encoded to JSON once, the same bytes for everyone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

# The types that end a reply: route 7 closes its stream after one of them.
FINAL_TYPES = frozenset({"complete", "cancelled", "error"})


def dumps(value: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as `json.dumps(separators=(",", ":"), ensure_ascii=False)` writes it
    for what events hold, at a tenth of the cost (every token is encoded once here). Keys that
    are not strings are written as strings, as `json` does; NaN and infinities become `null`
    (`json` would write NaN, which no JSON parser reads)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a conversation's event history, written `<epoch>:<seq>`."""

    epoch: str
    seq: int

    @classmethod
    def parse(cls, text: str | None) -> Position | None:
        """The position in a `Last-Event-ID` header or `since` field; `None` if unreadable."""
        if not text:
            return None
        epoch, sep, seq = text.strip().rpartition(":")
        if not sep or not epoch or not seq.isdigit():
            return None
        return cls(epoch, int(seq))

    def __str__(self) -> str:
        return f"{self.epoch}:{self.seq}"


@dataclass(frozen=True, slots=True)
class Event:
    """One published event. `data` is its JSON, made once at publication."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID
    type: str
    epoch: str
    seq: int
    data: bytes
    at: float
    message_id: str | None
    # The SSE frame: an `id:` line, a `data:` line, a blank line, made once with the JSON.
    sse: bytes

    @classmethod
    def create(
        cls,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        type: str,
        epoch: str,
        seq: int,
        payload: dict[str, Any],
        at: float,
        conversation_text: str | None = None,
    ) -> Event:
        """`conversation_text` is `str(conversation_id)` when the caller has it already."""
        body = {
            "type": type,
            "conversation_id": conversation_text or str(conversation_id),
            "epoch": epoch,
            "seq": seq,
            **payload,
        }
        message_id = payload.get("message_id") or (payload.get("message") or {}).get("id")
        data = dumps(body)
        sse = b"id: %s:%d\ndata: %s\n\n" % (epoch.encode(), seq, data)
        return cls(conversation_id, user_id, type, epoch, seq, data, at, message_id, sse)

    @property
    def size(self) -> int:
        """Bytes it keeps alive, counted against the hub's retention budget."""
        return len(self.data) + len(self.sse)


def reset_frame(conversation_id: uuid.UUID, reason: str) -> bytes:
    """`reset`: reload the messages list. It carries no id, so a client keeps its last position."""
    return dumps({"type": "reset", "conversation_id": str(conversation_id), "reason": reason})


# Not an event of any conversation: the hub's periodic sign that a quiet stream is alive.
KEEP_ALIVE = Event(uuid.UUID(int=0), uuid.UUID(int=0), "keep-alive", "", 0, b"", 0.0, None, b"")
