"""In-process fan-out of conversation events, with a bounded replay history per conversation.

`publish` never waits: each subscriber has its own bounded queue, and one that is full is cut
off (it receives `reset` after what it already has, and can resume from its last position)
instead of slowing the actor down. Each conversation keeps its recent events for replay,
within a count, an age and a global byte budget, so memory stays bounded however many
conversations are live.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.events import KEEP_ALIVE, Event, Position


@dataclass(frozen=True)
class HubLimits:
    retained: int = 1000
    retained_s: float = 600.0
    retained_bytes: int = 64 * 1024 * 1024
    queue_size: int = 1000


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


class _Log:
    """One conversation's numbering and recent events."""

    __slots__ = ("epoch", "events", "last_at", "next_seq", "size", "subscribers")

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(4)
        self.next_seq = 1
        self.events: deque[Event] = deque()
        self.size = 0
        self.subscribers: set[Subscriber] = set()
        self.last_at = 0.0


class Hub:
    """Publishes events to the subscribers of a conversation and of its owner."""

    def __init__(self, limits: HubLimits | None = None) -> None:
        self.limits = limits or HubLimits()
        # Least recently active first: trimming for the byte budget starts there.
        self._logs: OrderedDict[uuid.UUID, _Log] = OrderedDict()
        self._user_subscribers: dict[uuid.UUID, set[Subscriber]] = {}
        self._bytes = 0
        self._closed = False

    @property
    def retained_bytes(self) -> int:
        return self._bytes

    def publish(
        self,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        type: str,
        payload: dict[str, Any],
    ) -> Event:
        """Number, encode, retain and deliver one event. Never waits."""
        now = anyio.current_time()
        log = self._logs.get(conversation_id)
        if log is None:
            log = self._logs[conversation_id] = _Log()
        else:
            self._logs.move_to_end(conversation_id)
        event = Event.create(
            conversation_id=conversation_id,
            user_id=user_id,
            type=type,
            epoch=log.epoch,
            seq=log.next_seq,
            payload=payload,
            at=now,
        )
        log.next_seq += 1
        log.last_at = now
        log.events.append(event)
        log.size += event.size
        self._bytes += event.size
        self._trim(log, now)
        for subscriber in tuple(log.subscribers):
            subscriber.offer(event)
        for subscriber in tuple(self._user_subscribers.get(user_id, ())):
            subscriber.offer(event)
        self._enforce_budget(now)
        return event

    def subscribe(self, conversation_id: uuid.UUID, since: Position | None = None) -> Subscription:
        """Subscribe to a conversation: the events after `since` that are retained, then live."""
        subscription = Subscription(self, conversation_id, self.limits.queue_size)
        self.attach(subscription, since)
        return subscription

    def attach(self, subscriber: Subscriber, since: Position | None = None) -> None:
        """Register a subscriber of its topic's conversation, replaying after `since` first.

        Replay and registration happen with no await in between, so nothing published in the
        meantime can be missed or delivered twice.
        """
        conversation_id = subscriber.topic
        now = anyio.current_time()
        log = self._logs.get(conversation_id)
        if log is None:
            log = self._logs[conversation_id] = _Log()
            log.last_at = now
        self._trim(log, now)
        if since is not None:
            replay = self._replay(log, since)
            if replay is None:
                subscriber.reset_first = "unknown_position"
            else:
                for event in replay:
                    subscriber.offer(event)
        if self._closed:
            subscriber.end()
        elif subscriber.cut_off is None:
            log.subscribers.add(subscriber)

    def subscribe_user(self, user_id: uuid.UUID) -> Subscription:
        """Subscribe to every event of a user's conversations, from now on."""
        subscription = Subscription(self, user_id, self.limits.queue_size)
        self.attach_user(subscription)
        return subscription

    def attach_user(self, subscriber: Subscriber) -> None:
        """Register a subscriber of every event of its topic's (a user's) conversations."""
        if self._closed:
            subscriber.end()
        else:
            self._user_subscribers.setdefault(subscriber.topic, set()).add(subscriber)

    def signal(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, type: str, payload: dict[str, Any]
    ) -> None:
        """Tell a user's subscribers something passing (`typing`): not numbered, not retained."""
        subscribers = self._user_subscribers.get(user_id)
        if not subscribers:
            return
        body = {"type": type, "conversation_id": str(conversation_id), **payload}
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        event = Event(conversation_id, user_id, type, "", 0, data, anyio.current_time(), None, b"")
        for subscriber in tuple(subscribers):
            subscriber.offer(event)

    def unsubscribe(self, subscription: Subscriber) -> None:
        log = self._logs.get(subscription.topic)
        if log is not None:
            log.subscribers.discard(subscription)
            self._forget_if_unused(subscription.topic, log)
        users = self._user_subscribers.get(subscription.topic)
        if users is not None:
            users.discard(subscription)
            if not users:
                del self._user_subscribers[subscription.topic]

    def keep_alive(self, quiet_s: float) -> None:
        """Give every subscriber that has had nothing for `quiet_s` a `KEEP_ALIVE` marker.

        One periodic sweep for all streams, instead of a timer armed around every wait for
        an event in every stream.
        """
        now = anyio.current_time()
        subscribers = [s for log in self._logs.values() for s in log.subscribers]
        subscribers += [s for group in self._user_subscribers.values() for s in group]
        for subscriber in subscribers:
            if now - subscriber.last_offered >= quiet_s:
                subscriber.offer(KEEP_ALIVE)

    def head(self, conversation_id: uuid.UUID) -> Position | None:
        """The position of the last event published in a conversation, if it is known."""
        log = self._logs.get(conversation_id)
        if log is None or log.next_seq == 1:
            return None
        return Position(log.epoch, log.next_seq - 1)

    def close(self) -> None:
        """End every subscription (shutdown): their streams finish what is queued and stop."""
        self._closed = True
        for log in self._logs.values():
            for subscriber in tuple(log.subscribers):
                subscriber.end()
        for subscribers in list(self._user_subscribers.values()):
            for subscriber in tuple(subscribers):
                subscriber.end()

    def _replay(self, log: _Log, since: Position) -> list[Event] | None:
        """The retained events after `since`, or `None` if that position cannot be honoured."""
        if since.epoch != log.epoch or since.seq >= log.next_seq:
            return None
        oldest = log.events[0].seq if log.events else log.next_seq
        if since.seq < oldest - 1:
            return None
        skip = since.seq - oldest + 1
        return [log.events[i] for i in range(max(skip, 0), len(log.events))]

    def _trim(self, log: _Log, now: float) -> None:
        events = log.events
        while events and (
            len(events) > self.limits.retained or now - events[0].at > self.limits.retained_s
        ):
            self._drop_oldest(log)

    def _drop_oldest(self, log: _Log) -> None:
        event = log.events.popleft()
        log.size -= event.size
        self._bytes -= event.size

    def _enforce_budget(self, now: float) -> None:
        """Forget idle conversations, and trim the least recently active ones past the budget."""
        oldest = next(iter(self._logs.values()), None)
        if oldest is None or (
            now - oldest.last_at <= self.limits.retained_s
            and self._bytes <= self.limits.retained_bytes
        ):
            # The common case, on every publish: nothing to do, found in O(1).
            return
        for conversation_id, log in list(self._logs.items()):
            idle = now - log.last_at > self.limits.retained_s
            if not idle and self._bytes <= self.limits.retained_bytes:
                break
            while log.events and (idle or self._bytes > self.limits.retained_bytes):
                self._drop_oldest(log)
            if not log.subscribers:
                self._forget_if_unused(conversation_id, log)
            elif idle:
                # Quiet but watched: its numbering must stay. Look at it again much later,
                # rather than on every publish.
                log.last_at = now
                self._logs.move_to_end(conversation_id)

    def _forget_if_unused(self, conversation_id: uuid.UUID, log: _Log) -> None:
        if not log.events and not log.subscribers:
            # Its history is gone: a later event starts a new epoch, so an old position can
            # never be mistaken for a new one.
            del self._logs[conversation_id]
