"""What the actors tell an observer (metrics), defined here so `actors/` imports nothing of it.

`chat/` implements `Observer` (Prometheus counters and histograms); the actors call it once
per reply, per crash and per cut-off subscriber, never per chunk, so the hot path stays a few
attribute reads. Gauges (live actors, queued commands, subscribers, retained bytes) are not
pushed at all: the observer reads them from the registry and the hub when it is scraped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ReplyReport:
    """How one reply ended."""

    # `complete`, `cancelled` or `failed`.
    status: str
    # The error code of a reply that did not complete (`timeout`, `rate_limited`, `shutdown`,
    # a provider's code, …), empty when it did.
    code: str
    duration_s: float
    # From the start of the reply to its first text, `None` if it produced none.
    first_token_s: float | None
    # The provider's count of completion tokens, else the number of text parts streamed.
    tokens: int


class Observer(Protocol):
    """Receives the actors' countable happenings; every method must return at once."""

    def reply_ended(self, report: ReplyReport) -> None: ...

    def actor_crashed(self) -> None: ...

    def subscriber_cut_off(self, reason: str) -> None: ...


class Unobserved:
    """The observer when nobody watches (tests, tools): does nothing."""

    def reply_ended(self, report: ReplyReport) -> None:
        pass

    def actor_crashed(self) -> None:
        pass

    def subscriber_cut_off(self, reason: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RegistryStats:
    """The registry's state at one moment, read when metrics are scraped."""

    live: int
    running: int
    queued_commands: int
    replying: int


@dataclass(frozen=True, slots=True)
class HubStats:
    """The hub's state at one moment, read when metrics are scraped."""

    conversations: int
    subscribers: int
    retained_bytes: int
