"""The composition root: builds every service, owns every long-lived task, serves the app.

Everything long-lived is entered and exited here, in one task, so that no task group or
connection pool is ever opened in one task and closed in another.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from anyio.abc import TaskGroup
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from actors.actor import ActorConfig
from actors.hub import Hub, HubLimits
from actors.provider import Provider
from actors.registry import Registry
from actors.store import DatabaseStore
from chat.app import create_app
from chat.assistant.providers import open_provider
from chat.credentials import Passwords, Tokens, user_cache
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


async def host_actors(cancel: anyio.Event, *, task_status: anyio.abc.TaskStatus[TaskGroup]) -> None:
    """The task group every actor lives in, in a task of its own.

    Its own task so that cancelling the actors at the end of a shutdown cancels only them,
    not the serving code that runs in the composition root's task.
    """
    async with anyio.create_task_group() as actors:
        task_status.started(actors)
        await cancel.wait()
        actors.cancel_scope.cancel()


async def keep_streams_alive(hub: Hub, quiet_s: float) -> None:
    """Mark every stream that has been quiet for `quiet_s` (its SSE relay sends a comment)."""
    while True:
        await anyio.sleep(min(1.0, quiet_s / 3))
        hub.keep_alive(quiet_s)


def actor_config(settings: Settings) -> ActorConfig:
    return ActorConfig(
        idle_s=settings.actor_idle_s,
        max_live=settings.actor_max_live,
        mailbox_size=settings.actor_mailbox_size,
        history_messages=settings.actor_history_messages,
        reply_timeout_s=settings.reply_timeout_s,
    )


def hub_limits(settings: Settings) -> HubLimits:
    return HubLimits(
        retained=settings.events_retained,
        retained_s=settings.events_retained_s,
        retained_bytes=settings.events_retained_bytes,
        queue_size=settings.subscriber_queue_size,
    )


@asynccontextmanager
async def running_services(
    settings: Settings, stop: anyio.Event | None = None, provider: Provider | None = None
) -> AsyncIterator[Services]:
    """Connect, start the actors and background tasks; stop them in order on `stop` or exit.

    `provider` replaces the configured one (benchmarks and tests bring their own).
    Stopping: no new commands; running replies get `shutdown_grace_s` to finish, then are
    cancelled (their partial text is stored); then every event stream is ended, so that the
    server's own graceful shutdown is not held up by open SSE responses.
    """
    db = create_database(settings.database, pool_size=settings.database_pool_size)
    await db.connect()
    try:
        await prepare(db)
        async with open_provider(settings, provider) as provider, anyio.create_task_group() as tg:
            hub = Hub(hub_limits(settings))
            cancel_actors = anyio.Event()
            actors: TaskGroup = await tg.start(host_actors, cancel_actors)
            registry = Registry(
                store=DatabaseStore(db),
                provider=provider,
                hub=hub,
                config=actor_config(settings),
                task_group=actors,
            )
            services = Services(
                settings=settings,
                db=db,
                tokens=Tokens.from_settings(settings),
                passwords=Passwords.from_settings(settings),
                users=user_cache(settings.auth_cache_s),
                hub=hub,
                registry=registry,
            )

            async def shut_down() -> None:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(settings.shutdown_grace_s):
                        await registry.drain()
                    cancel_actors.set()
                    with anyio.move_on_after(settings.shutdown_grace_s):
                        await registry.wait_stopped()
                    hub.close()

            async def shut_down_on_stop(stop: anyio.Event) -> None:
                await stop.wait()
                log.info("stopping: finishing replies, then closing event streams")
                await shut_down()

            tg.start_soon(sweep_deleted, services)
            tg.start_soon(keep_streams_alive, hub, settings.sse_keepalive_s)
            if stop is not None:
                tg.start_soon(shut_down_on_stop, stop)
            try:
                yield services
            finally:
                await shut_down()
                tg.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(5, shield=True):
            await db.disconnect()


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections for a long-running server (measured: docs/benchmarks.md).

    What start-up made (modules, the app, the knowledge base) is frozen out of collection,
    and full collections, which walk every live object including each conversation's
    retained events, run far less often: they stalled every stream at once for up to 113 ms.
    Almost everything the server makes is freed by reference counting; the collector is
    only for cycles.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


async def _stop_on_signal(stop: anyio.Event) -> None:
    import signal

    # In a task of its own that returns: holding the receiver open around `serve` in the
    # main task ends a SIGTERM stop in a stray CancelledError.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()
            return


async def serve(settings: Settings, config: Config, provider: Provider | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting, finish and close everything."""
    stop = anyio.Event()
    async with running_services(settings, stop, provider) as services:
        app = create_app(services)
        tune_garbage_collector()

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
