"""Exceptions of the actor runtime."""

from __future__ import annotations


class ActorError(Exception):
    """Base class of the actor runtime's errors."""


class ConversationGone(ActorError):
    """The conversation does not exist, was deleted, or is not the caller's."""


class ActorUnavailable(ActorError):
    """The actor could not take the command (shutting down, mailbox full, or it crashed)."""


class ActorCrashed(ActorUnavailable):
    """The actor failed while handling this command; it restarts for the next one."""


class StoreTimeout(ActorUnavailable):
    """The database did not store the reply within its deadline; the actor goes on."""
