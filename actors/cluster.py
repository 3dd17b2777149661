"""The cluster's side of the registry: the leases and the forwarding, run together."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from databases import Database

from actors.bridge import Bridge
from actors.commands import PostMessage
from actors.config import ActorConfig
from actors.errors import ConversationGone
from actors.forwarding import Cancel, Forwarding, Post
from actors.lease import Leases
from storage.fences import raise_fence

if TYPE_CHECKING:
    from actors.registry import Registry

# Lookups of a conversation's owner before a command gives up (each may wait for a dead
# owner's lease to expire).
ATTEMPTS = 4


@dataclass
class Cluster:
    leases: Leases
    forwarding: Forwarding

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Renew the leases and serve forwarded commands until cancelled (then release)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.leases.run)
            tg.start_soon(self.forwarding.run)
            task_status.started()

    def attach(self, registry: Registry) -> None:
        """Forwarded commands run on `registry`'s actors; a lost lease retires its actor."""

        async def post(request: Post) -> PostMessage:
            return await registry.post_message(
                uuid.UUID(request.user_id),
                uuid.UUID(request.conversation_id),
                request.content,
                request.idempotency_key,
                paced=request.paced,
                origin=request.origin,
                local=True,
            )

        async def cancel(request: Cancel) -> bool:
            conversation_id = uuid.UUID(request.conversation_id)
            if request.discard:
                # Deleted: the database no longer shows it, so only the live actor can say
                # whose it is.
                return registry.discard(conversation_id, uuid.UUID(request.user_id))
            try:
                await registry.check_owner(uuid.UUID(request.user_id), conversation_id)
            except ConversationGone:
                return False
            return registry.cancel_reply(conversation_id)

        self.forwarding.local_post = post
        self.forwarding.local_cancel = cancel
        self.leases.on_lost = registry.lost

    async def cancel_elsewhere(
        self, user_id: uuid.UUID, conversation_id: uuid.UUID, discard: bool = False
    ) -> bool:
        """Stop the conversation's reply (with `discard`, retire its actor too) on the
        instance holding its lease, if another."""
        owner = await self.leases.owner(conversation_id)
        if owner is None or owner == self.leases.instance:
            return False
        return await self.forwarding.cancel(owner, user_id, conversation_id, discard)


def lost(reply_id: str) -> dict[str, Any]:
    """The terminal event of a reply whose instance died before storing it."""
    return {
        "message_id": reply_id,
        "error": "the reply was lost with the instance generating it",
        "code": "internal_error",
    }


# How long the owner may take to store a forwarded message (chat.operations.ACCEPT_DEADLINE_S).
ACCEPT_S = 30.0
# A claim is one short UPDATE, shielded so that a cancelled one cannot break its connection.
# On a loaded database it queues behind every reply's writes: it gets as long as a message has
# to be accepted (5 s refused about one post in ten at 300-500 streams on two cores, as 503).
CLAIM_DEADLINE_S = ACCEPT_S


def make_cluster(bridge: Bridge, db: Database, lease_s: float, actors: ActorConfig) -> Cluster:
    """Leases and forwarding over the bridge's Redis client, as the bridge's instance."""

    async def claim(conversation_id: uuid.UUID, fence: int) -> int | None:
        with anyio.fail_after(CLAIM_DEADLINE_S, shield=True):
            return await raise_fence(db, conversation_id, fence)

    timeout_s = bridge.config.timeout_s
    # A forwarded reply may take as long at its owner as a local one, and its write.
    finish_s = actors.reply_timeout_s + actors.write_timeout_s + timeout_s
    leases = Leases(
        bridge.redis, bridge.instance, lease_s=lease_s, timeout_s=timeout_s, claim=claim
    )
    forwarding = Forwarding(
        bridge.redis, bridge.instance, timeout_s=timeout_s, accept_s=ACCEPT_S, finish_s=finish_s
    )
    forwarding.holder = leases.holder
    leases.available = lambda: bridge.up
    bridge.direct = forwarding.receive
    return Cluster(leases, forwarding)
