"""One shutdown budget: replies get the grace period, stores their deadline, and the total
fits under Hypercorn's graceful timeout, itself under the container's stop grace period."""

from __future__ import annotations

import re
import time
import tomllib
import uuid
from pathlib import Path

import anyio
import pytest

from chat.root import running_services, shutdown_budget_s
from chat.settings import load_settings
from storage.conversations import insert_conversation
from storage.messages import select_messages
from storage.users import insert_user
from tests.actors.scripted import ScriptedProvider
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.anyio


def test_the_budget_fits_under_hypercorn_and_the_container(tmp_path: Path) -> None:
    budget = shutdown_budget_s(load_settings({"PARLEY_VAR_DIR": str(tmp_path)}))
    graceful = tomllib.loads((ROOT / "hypercorn.toml").read_text())["graceful_timeout"]
    compose = (ROOT / "docker-compose.yml").read_text()
    found = re.search(r"stop_grace_period:\s*(\d+)s", compose)
    assert found, "docker-compose.yml sets no stop_grace_period (Docker's default is 10 s)"
    # Hypercorn also needs a moment after the app has ended its streams; the container a
    # moment more to close the database pool.
    assert budget + 1 <= graceful < int(found.group(1))


async def test_a_stop_stores_a_stuck_reply_within_the_budget(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url, shutdown_grace_s="0.2")
    provider = ScriptedProvider()
    stop = anyio.Event()
    started = 0.0
    async with running_services(settings, stop, provider) as services:
        user = await insert_user(
            services.db,
            email=f"{uuid.uuid4().hex[:8]}@example.com",
            password_hash="x",
            display_name=None,
        )
        conversation = await insert_conversation(
            services.db,
            user_id=user.id,
            title="t",
            title_set_by_user=True,
            retention_days=30,
        )
        command = await services.registry.post_message(user.id, conversation.id, "pause forever")
        with anyio.fail_after(5):
            await provider.paused.wait()
        started = time.monotonic()
        # The signal's path and the context's exit both shut down: it must happen once.
        stop.set()
    took = time.monotonic() - started
    assert took < shutdown_budget_s(settings)
    with anyio.fail_after(1), pytest.raises(Exception, match="shutting down"):
        await command.finished.wait()
    async with running_services(settings) as services:
        page = await select_messages(services.db, user.id, conversation.id, offset=0, limit=10)
    assert page is not None
    assert [(m.role, m.status, m.content) for m in page[0]] == [
        ("user", "complete", "pause forever"),
        ("assistant", "cancelled", "echo: pause "),
    ]
