"""What the hub delivers to: a subscriber of one topic (a conversation or a user)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.events import KEEP_ALIVE, Event

if TYPE_CHECKING:
    from actors.hub import Hub


class Subscriber:
    """What the hub delivers to: `offer` never waits. Subclasses decide where events go.

    A subscriber is registered under one topic: a conversation (`Hub.subscribe`) or a user
    (`Hub.subscribe_user`). `reset_first` is set when its replay position could not be
    honoured; `cut_off` once it is ended (and why).
    """

    def __init__(self, hub: Hub, topic: uuid.UUID) -> None:
        self._hub = hub
        self.topic = topic
        self.reset_first: str | None = None
        self.cut_off: str | None = None
        self.last_offered = anyio.current_time()

    def offer(self, event: Event) -> None:
        """Take an event without waiting; one that cannot keep up ends itself."""
        raise NotImplementedError

    def end(self, reason: str = "closed") -> None:
        """Stop delivering (shutdown, or too slow)."""
        if self.cut_off is None:
            self.cut_off = reason
            self._hub.unsubscribe(self)
            if reason != "closed":
                self._hub.cut_off(self, reason)

    def close(self) -> None:
        """Release the subscription (the subscriber went away)."""
        self._hub.unsubscribe(self)


class Subscription(Subscriber):
    """One subscriber's own bounded queue of events; `receive` them in order."""

    def __init__(self, hub: Hub, topic: uuid.UUID, size: int) -> None:
        super().__init__(hub, topic)
        self._send: MemoryObjectSendStream[Event]
        self._receive: MemoryObjectReceiveStream[Event]
        self._send, self._receive = anyio.create_memory_object_stream[Event](size)

    def offer(self, event: Event) -> None:
        """Queue an event without waiting; a full queue cuts the subscriber off."""
        if self.cut_off is not None:
            return
        try:
            self._send.send_nowait(event)
            self.last_offered = anyio.current_time()
        except anyio.WouldBlock:
            self.end("too_slow")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._hub.unsubscribe(self)

    def end(self, reason: str = "closed") -> None:
        """Stop delivering; the subscriber gets what is queued, then the stream ends."""
        if self.cut_off is None:
            super().end(reason)
            self._send.close()

    async def receive(self) -> Event | None:
        """The next event, or `None` at the end of the stream."""
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            return None

    def queued(self, limit: int) -> list[Event]:
        """Up to `limit` events already waiting, without waiting for more."""
        events: list[Event] = []
        while len(events) < limit:
            try:
                events.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        return events

    def close(self) -> None:
        super().close()
        self._send.close()
        self._receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Buffer(Subscriber):
    """Holds what arrives live while a subscriber's history is read from the relay."""

    def __init__(self, hub: Hub, topic: uuid.UUID) -> None:
        super().__init__(hub, topic)
        self.events: list[Event] = []

    def offer(self, event: Event) -> None:
        if event is not KEEP_ALIVE:
            self.events.append(event)
