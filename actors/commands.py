"""Commands an actor handles, and the one-shot outcomes its callers wait on."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

from storage.rows import Message

T = TypeVar("T")


class Outcome(Generic[T]):
    """A value or an error, delivered once by the actor; the caller bounds its wait."""

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = []

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback` (which must not raise or wait) once the outcome is delivered, or
        now if it already was: for what a caller holds until a reply ends, such as a slot of
        the user's concurrent replies, whether or not anyone waits for it."""
        if self.done:
            callback()
        else:
            self._callbacks.append(callback)

    def set(self, value: T) -> None:
        if not self.done:
            self._value = value
            self._finish()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self._error = error
            self._finish()

    def _finish(self) -> None:
        self._done.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    async def wait(self) -> T:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


@dataclass(frozen=True, slots=True)
class Accepted:
    """The user message is stored; the reply to it will carry `reply_id`."""

    message: Message
    reply_id: uuid.UUID
    # True when an `Idempotency-Key` matched: nothing new was stored.
    duplicate: bool


@dataclass(frozen=True)
class PostMessage:
    """Store a user's message and answer it."""

    user_id: uuid.UUID
    content: str
    idempotency_key: str | None = None
    # False for a synchronous POST: see `ReplyRequest.paced`.
    paced: bool = True
    # The connection that sent it, named in the `message` event (see `chat.operations`).
    origin: str | None = None
    accepted: Outcome[Accepted] = field(default_factory=Outcome)
    finished: Outcome[Message] = field(default_factory=Outcome)

    def fail(self, error: BaseException) -> None:
        self.accepted.fail(error)
        self.finished.fail(error)


Command = PostMessage
