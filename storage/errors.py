"""Exceptions raised by the storage layer."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of the storage layer's own errors."""


class NotFound(StorageError):
    """The row does not exist, is soft-deleted, or belongs to another user."""


class Conflict(StorageError):
    """The write would break a uniqueness rule (for example an email already registered)."""
