"""The registry: finds or starts the actor of a conversation and delivers commands to it.

On top of the hosting and supervision it inherits (actors/supervisor.py), it looks up a
conversation's live actor or activates one (checking the owner, and with a cluster taking the
conversation's lease first), forwards a command to the instance that holds the lease, and
carries cancels, renames, deletions and lost leases to the actor wherever it runs.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import anyio

from actors.cluster import ATTEMPTS, Cluster, lost
from actors.commands import PostMessage
from actors.errors import ActorUnavailable, ConversationGone
from actors.lease import Elsewhere
from actors.supervisor import Entry, Supervisor
from storage.rows import Conversation


class Registry(Supervisor):
    """Finds or starts the actor of a conversation and delivers commands to it.

    Lifecycle: `run` hosts the actors until `close` (or `drain`) and every actor has ended;
    `cancel` cuts running replies short (they store what they have, within their deadline).
    """

    def join(self, cluster: Cluster) -> None:
        """Run one actor per conversation across the cluster: take the lease before spawning,
        forward commands for conversations whose lease another instance holds."""
        self.cluster = cluster
        cluster.attach(self)

    async def post_message(
        self,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        content: str,
        idempotency_key: str | None = None,
        *,
        paced: bool = True,
        origin: str | None = None,
        local: bool = False,
    ) -> PostMessage:
        """Hand a message to the conversation's actor; wait on the command's outcomes.

        With a cluster, a conversation whose lease another instance holds has its command
        forwarded there, unless `local` (a command forwarded here is never sent on)."""
        command = PostMessage(user_id, content, idempotency_key, paced, origin)
        for _ in range(ATTEMPTS):
            entry = await self._entry(user_id, conversation_id)
            if isinstance(entry, Elsewhere):
                assert self.cluster is not None
                if local:
                    raise ActorUnavailable("the conversation moved, try again")
                if await self.cluster.forwarding.post(entry.owner, conversation_id, command):
                    return command
                # Nobody listens there: the owner died. Its lease is free once it expires
                # (the caller bounds the whole wait).
                await anyio.sleep(min(entry.ttl_s, self.cluster.leases.lease_s) + 0.01)
                continue
            try:
                await entry.inbox.send(command)
                return command
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                # It retired between lookup and delivery; the next lookup starts a new one.
                continue
        raise ActorUnavailable("the conversation is restarting, try again")

    async def check_owner(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """`ConversationGone` unless this is the user's live conversation."""
        entry = self._live.get(conversation_id)
        if entry is not None:
            if entry.actor.conversation.user_id != user_id:
                raise ConversationGone()
            return
        if await self.store.load_conversation(user_id, conversation_id) is None:
            raise ConversationGone()

    def update_conversation(self, conversation: Conversation) -> None:
        """The conversation was renamed elsewhere: the live actor's copy follows."""
        entry = self._live.get(conversation.id)
        if entry is not None:
            entry.actor.conversation = replace(
                conversation, total_messages=entry.actor.conversation.total_messages
            )

    def cancel_reply(self, conversation_id: uuid.UUID) -> bool:
        entry = self._live.get(conversation_id)
        return entry is not None and entry.actor.cancel_reply()

    async def cancel_anywhere(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> bool:
        """Stop the conversation's reply here, or on the instance whose actor runs it."""
        if self.cancel_reply(conversation_id):
            return True
        if self.cluster is None or conversation_id in self._live:
            return False
        return await self.cluster.cancel_elsewhere(user_id, conversation_id)

    def lost(self, conversation_id: uuid.UUID, taken: bool) -> None:
        """The lease is gone: no new commands here. Taken by another instance, the reply
        stops too (its write would be fenced anyway)."""
        entry = self._live.get(conversation_id)
        if entry is not None:
            if taken:
                entry.actor.cancel_reply()
            self._retire(entry)

    def discard(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """The user's conversation was deleted: stop its reply and retire its actor here;
        whether a reply was running."""
        entry = self._live.get(conversation_id)
        if entry is None or entry.actor.conversation.user_id != user_id:
            return False
        running = entry.actor.cancel_reply()
        self._retire(entry)
        return running

    async def discard_anywhere(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """`discard` here, or on the instance whose actor runs the conversation, so that a
        reply stops at once wherever it runs (not when it next tries to write)."""
        if conversation_id in self._live:
            self.discard(conversation_id, user_id)
        elif self.cluster is not None:
            await self.cluster.cancel_elsewhere(user_id, conversation_id, discard=True)

    async def _entry(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> Entry | Elsewhere:
        entry = self._live.get(conversation_id)
        if entry is None:
            self._refuse_if_closing()
            self._check_crashes(conversation_id)
            conversation = await self.store.load_conversation(user_id, conversation_id)
            if conversation is None:
                raise ConversationGone()
            interrupted = None
            if self.cluster is not None and conversation_id not in self._live:
                taken = await self.cluster.leases.acquire(conversation_id)
                if isinstance(taken, Elsewhere):
                    return taken
                interrupted = taken.interrupted
            # Shutdown may have begun, or another caller started it, while we were loading.
            self._refuse_if_closing()
            entry = self._live.get(conversation_id) or self._spawn(conversation)
            if interrupted is not None:
                # Its owner died mid-reply: the reply was never stored; its watchers learn
                # that it ended.
                self.hub.publish(conversation_id, conversation.user_id, "error", lost(interrupted))
        if entry.actor.conversation.user_id != user_id:
            raise ConversationGone()
        if self._live.get(conversation_id) is entry:
            self._live.move_to_end(conversation_id)
        return entry
