"""`ActorConfig`: the settings of the conversation actors and of the registry that hosts them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActorConfig:
    idle_s: float = 300.0
    max_live: int = 10_000
    mailbox_size: int = 64
    history_messages: int = 50
    reply_timeout_s: float = 300.0
    # How long one write may take once shutdown has cut replies short: the part of the
    # shutdown budget that comes after the grace period (docs/design.md).
    store_deadline_s: float = 3.0
    # How long one write may take otherwise: a loaded database may queue writes for seconds
    # (seen at 500 streams on PostgreSQL), and a reply must not be lost for that.
    write_timeout_s: float = 60.0
    # A conversation whose actor crashes more often than this is refused for a while.
    max_restarts: int = 5
    restart_window_s: float = 60.0
