"""In-process fan-out of conversation events, with a bounded replay history per conversation.

`publish` never waits: each subscriber has its own bounded queue, and one that is full is cut
off (it receives `reset` after what it already has, and can resume from its last position)
instead of slowing the actor down. Each conversation keeps its recent events for replay,
within a count, an age and a global byte budget, so memory stays bounded however many
conversations are live.

With a relay (the Redis bridge, `actors/bridge.py`) the relay numbers, retains and shares the
events while Redis answers, and hands them back through `deliver`; while it does not, the hub
is what it is without one (local numbering in a local epoch).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from actors.events import KEEP_ALIVE, Event, Position, dumps
from actors.observer import HubStats, Observer, Unobserved
from actors.subscription import Buffer, Subscriber, Subscription

__all__ = ["Hub", "HubLimits", "Relay", "Subscriber", "Subscription"]

# Not `log`: that name is a conversation's `_Log` throughout this module.
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubLimits:
    retained: int = 1000
    retained_s: float = 600.0
    retained_bytes: int = 64 * 1024 * 1024
    queue_size: int = 1000


class Relay(Protocol):
    """What the hub needs from a bridge to other instances."""

    def submit(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, type: str, payload: dict[str, Any]
    ) -> bool:
        """Take an event to number and share (never waits); `False`: publish it locally."""
        ...

    def watch(self, topic: uuid.UUID, user: bool, on: bool) -> None:
        """A topic gained its first local subscriber (`on`) or lost its last one."""
        ...

    async def replay(self, conversation_id: uuid.UUID, since: Position | None) -> Replay:
        """Be subscribed to the conversation, then read what followed `since`."""
        ...

    def signal(self, event: Event) -> None:
        """Pass a passing event (`typing`) to its user's subscribers on other instances."""
        ...


# What a user's subscribers get (a socket's conversation list and the messages sent elsewhere):
# not the replies' own events, which only a conversation's subscribers need.
USER_TYPES = frozenset({"message", "conversation_updated", "conversation_deleted", "typing"})


# What a relay's replay found: `None` (it cannot tell: use the hub's own), `"reset"` (the
# position cannot be honoured) or the events after it (possibly none), oldest first.
Replay = list[Event] | str | None


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
        self.relay: Relay | None = None
        self.observer: Observer = Unobserved()

    @property
    def retained_bytes(self) -> int:
        return self._bytes

    def stats(self) -> HubStats:
        """Conversations with retained events or subscribers, subscribers, retained bytes
        (O(conversations): read when metrics are scraped)."""
        subscribers = sum(len(log.subscribers) for log in self._logs.values())
        subscribers += sum(len(s) for s in self._user_subscribers.values())
        return HubStats(len(self._logs), subscribers, self._bytes)

    def cut_off(self, subscriber: Subscriber, reason: str) -> None:
        """A subscriber was ended for a reason other than leaving (too slow, a gap): logged
        and counted once."""
        logger.warning("a subscriber of %s was cut off: %s", subscriber.topic, reason)
        self.observer.subscriber_cut_off(reason)

    def publish(
        self,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        type: str,
        payload: dict[str, Any],
    ) -> Event | None:
        """Number, encode, retain and deliver one event. Never waits.

        With a relay that takes it, the event is numbered and delivered a moment later (and
        `None` returned); otherwise here and now, and the event returned.
        """
        if self.relay is not None and self.relay.submit(conversation_id, user_id, type, payload):
            return None
        return self.publish_local(conversation_id, user_id, type, payload)

    def publish_local(
        self,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        type: str,
        payload: dict[str, Any],
    ) -> Event:
        """Number in this process's epoch, encode, retain and deliver one event."""
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
        self.deliver(event)
        self._enforce_budget(now)
        return event

    def deliver(self, event: Event, conversation: bool = True, user: bool = True) -> None:
        """Hand a numbered event to this process's subscribers of its conversation and user."""
        if conversation and (log := self._logs.get(event.conversation_id)) is not None:
            for subscriber in tuple(log.subscribers):
                subscriber.offer(event)
        if user and event.type in USER_TYPES:
            for subscriber in tuple(self._user_subscribers.get(event.user_id, ())):
                subscriber.offer(event)

    def watched(self, conversation_id: uuid.UUID) -> bool:
        """Whether a subscriber of this process follows the conversation."""
        log = self._logs.get(conversation_id)
        return log is not None and bool(log.subscribers)

    def cut(self, conversation_id: uuid.UUID, reason: str) -> None:
        """End every subscriber of a conversation: they missed events (they get `reset`)."""
        log = self._logs.get(conversation_id)
        if log is not None:
            for subscriber in tuple(log.subscribers):
                subscriber.end(reason)

    def subscribe(self, conversation_id: uuid.UUID, since: Position | None = None) -> Subscription:
        """Subscribe to a conversation: the events after `since` that are retained, then live."""
        subscription = Subscription(self, conversation_id, self.limits.queue_size)
        self.attach(subscription, since)
        return subscription

    def attach(self, subscriber: Subscriber, since: Position | None = None) -> None:
        """Register a subscriber of its topic's conversation, replaying after `since` first.

        Replay and registration happen with no await in between, so nothing published in the
        meantime can be missed or delivered twice. This replays from this process's own
        history only: `follow` replays through the relay.
        """
        log = self._log_of(subscriber.topic)
        if since is not None:
            replay = self._replay(log, since)
            if replay is None:
                subscriber.reset_first = "unknown_position"
            else:
                for event in replay:
                    subscriber.offer(event)
        self._register(log, subscriber)

    async def follow(self, subscriber: Subscriber, since: Position | None = None) -> None:
        """`attach`, through the relay when there is one: subscribed to the conversation's
        channel first, and the events after `since` read from the shared history.

        What arrives live while the history is read waits in a buffer; after the replay it is
        delivered, less what the replay already had, so there is no gap and no duplicate.
        """
        if self.relay is None or self._closed:
            self.attach(subscriber, since)
            return
        log = self._log_of(subscriber.topic)
        buffer = Buffer(self, subscriber.topic)
        self._register(log, buffer)
        try:
            replay = await self.relay.replay(subscriber.topic, since)
        finally:
            # No await from here to the subscriber's registration: a watch dropped here and
            # taken again there never reaches Redis.
            log.subscribers.discard(buffer)
            if not log.subscribers:
                self.relay.watch(subscriber.topic, user=False, on=False)
        if replay is None:
            # The relay is away: this process's own history (a Redis position gets `reset`).
            self.attach(subscriber, since)
            for event in buffer.events:
                subscriber.offer(event)
            return
        last: Position | None = since
        if isinstance(replay, str):
            subscriber.reset_first = "unknown_position"
        else:
            for event in replay:
                subscriber.offer(event)
            if replay:
                last = Position(replay[-1].epoch, replay[-1].seq)
        for event in buffer.events:
            if last is None or event.epoch != last.epoch or event.seq > last.seq:
                subscriber.offer(event)
        self._register(self._log_of(subscriber.topic), subscriber)

    def _log_of(self, conversation_id: uuid.UUID) -> _Log:
        now = anyio.current_time()
        log = self._logs.get(conversation_id)
        if log is None:
            log = self._logs[conversation_id] = _Log()
            log.last_at = now
        self._trim(log, now)
        return log

    def _register(self, log: _Log, subscriber: Subscriber) -> None:
        if self._closed:
            subscriber.end()
        elif subscriber.cut_off is None:
            if not log.subscribers and self.relay is not None:
                self.relay.watch(subscriber.topic, user=False, on=True)
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
            return
        subscribers = self._user_subscribers.setdefault(subscriber.topic, set())
        if not subscribers and self.relay is not None:
            self.relay.watch(subscriber.topic, user=True, on=True)
        subscribers.add(subscriber)

    def signal(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, type: str, payload: dict[str, Any]
    ) -> None:
        """Tell a user's subscribers something passing (`typing`): not numbered, not retained."""
        subscribers = self._user_subscribers.get(user_id)
        if not subscribers and self.relay is None:
            return
        body = {"type": type, "conversation_id": str(conversation_id), **payload}
        data = dumps(body)
        # Position 0 of no epoch: never numbered, and a frame the bridge can carry as it is.
        sse = b"id: :0\ndata: " + data + b"\n\n"
        event = Event(conversation_id, user_id, type, "", 0, data, anyio.current_time(), None, sse)
        for subscriber in tuple(subscribers or ()):
            subscriber.offer(event)
        if self.relay is not None:
            self.relay.signal(event)

    def unsubscribe(self, subscription: Subscriber) -> None:
        topic = subscription.topic
        log = self._logs.get(topic)
        if log is not None and subscription in log.subscribers:
            log.subscribers.discard(subscription)
            if not log.subscribers and self.relay is not None:
                self.relay.watch(topic, user=False, on=False)
            self._forget_if_unused(topic, log)
        users = self._user_subscribers.get(topic)
        if users is not None and subscription in users:
            users.discard(subscription)
            if not users:
                del self._user_subscribers[topic]
                if self.relay is not None:
                    self.relay.watch(topic, user=True, on=False)

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
