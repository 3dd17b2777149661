"""Actor tests run on asyncio (with the real SQLite store) and on trio (with the memory store)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from databases import Database

from actors.config import ActorConfig
from actors.hub import Hub, HubLimits
from actors.registry import Registry
from actors.store import DatabaseStore, Store
from storage.conversations import insert_conversation
from storage.database import create_database
from storage.users import insert_user
from tests import databases as test_databases
from tests.actors.memory_store import MemoryStore
from tests.actors.scripted import ScriptedProvider


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


NewConversation = Callable[[], Awaitable[uuid.UUID]]


@dataclass
class World:
    store: Store
    user_id: uuid.UUID
    new_conversation: NewConversation


@pytest.fixture(name="world")
async def fixture_world(
    anyio_backend: str, sqlite_template: Path, tmp_path: Path
) -> AsyncIterator[World]:
    user_id = uuid.uuid4()
    if anyio_backend == "trio":
        memory = MemoryStore()

        async def new_memory_conversation() -> uuid.UUID:
            return memory.add_conversation(user_id).id

        yield World(memory, user_id, new_memory_conversation)
        return
    db: Database = create_database(test_databases.sqlite_copy(sqlite_template, tmp_path))
    await db.connect()
    try:
        user = await insert_user(
            db, email="actor@example.com", password_hash="x", display_name=None
        )

        async def new_db_conversation() -> uuid.UUID:
            conversation = await insert_conversation(
                db,
                user_id=user.id,
                title="New conversation",
                title_set_by_user=False,
                retention_days=30,
            )
            return conversation.id

        yield World(DatabaseStore(db), user.id, new_db_conversation)
    finally:
        await db.disconnect()


@asynccontextmanager
async def running_registry(
    world: World,
    provider: ScriptedProvider,
    *,
    hub: Hub | None = None,
    **config: float,
) -> AsyncIterator[Registry]:
    """A registry hosting its actors in a task of the test's own task group."""
    async with anyio.create_task_group() as tg:
        registry = Registry(
            store=world.store,
            provider=provider,
            hub=hub or Hub(HubLimits()),
            config=ActorConfig(**config),  # type: ignore[arg-type]
        )
        await tg.start(registry.run)
        yield registry
        provider.release.set()
        with anyio.fail_after(5):
            await registry.drain()
