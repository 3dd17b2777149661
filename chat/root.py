"""The composition root: builds every service, owns every long-lived task, serves the app.

Everything long-lived is entered and exited here, in one task, so that no task group or
connection pool is ever opened in one task and closed in another.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from chat.app import create_app
from chat.auth import Passwords, Tokens
from chat.services import Services
from chat.settings import Settings
from storage.conversations import purge_deleted_conversations
from storage.database import create_database, prepare

log = logging.getLogger(__name__)


async def sweep_deleted(services: Services) -> None:
    """Purge soft-deleted conversations whose retention has passed, every `sweep_interval_s`."""
    while True:
        try:
            # Shielded: a query cancelled half-way can leave its connection broken (databases
            # #457), and shutdown can wait for one short statement.
            with anyio.CancelScope(shield=True):
                purged = await purge_deleted_conversations(services.db)
            if purged:
                log.info("purged %d deleted conversations past their retention", purged)
        except Exception:  # the database may be briefly away; try again next round
            log.exception("sweeping deleted conversations failed")
        await anyio.sleep(services.settings.sweep_interval_s)


@asynccontextmanager
async def running_services(settings: Settings) -> AsyncIterator[Services]:
    """Connect, start the background tasks, and tear both down in reverse order on exit."""
    db = create_database(settings.database, pool_size=settings.database_pool_size)
    await db.connect()
    try:
        await prepare(db)
        services = Services(
            settings=settings,
            db=db,
            tokens=Tokens.from_settings(settings),
            passwords=Passwords.from_settings(settings),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(sweep_deleted, services)
            yield services
            tg.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(5, shield=True):
            await db.disconnect()


async def _stop_on_signal(stop: anyio.Event) -> None:
    import signal

    # In a task of its own that returns: holding the receiver open around `serve` in the
    # main task ends a SIGTERM stop in a stray CancelledError.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()
            return


async def serve(settings: Settings, config: Config) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting, finish and close everything."""
    async with running_services(settings) as services:
        app = create_app(services)
        stop = anyio.Event()

        async def serve_app() -> None:
            # Hypercorn's asyncio TaskGroup on Python 3.11 leaves a cancel request on the task
            # that ran it; in a task of its own that request dies with the task instead of
            # surfacing as a stray CancelledError in the task groups of this one.
            await hypercorn_serve(app, config, shutdown_trigger=stop.wait)

        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, stop)
            log.info("serving on %s", ", ".join(config.bind))
            tg.start_soon(serve_app)
    log.info("stopped")
