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
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config
from hypercorn.config import Sockets as BoundSockets
from hypercorn.utils import wrap_app

from actors.bridge import Bridge, BridgeConfig, connect_redis
from actors.cluster import make_cluster
from actors.config import ActorConfig
from actors.hub import Hub, HubLimits
from actors.provider import Provider
from actors.registry import Registry
from actors.store import DatabaseStore
from chat import hypercorn_fixes
from chat.app import create_app
from chat.assistant.providers import open_provider
from chat.blueprints.metrics import serve_metrics
from chat.credentials import Passwords, Tokens, user_cache
from chat.metrics import Metrics
from chat.services import Services
from chat.settings import Settings
from chat.throttle import Rules, Throttle
from chat.tools.config import configured_servers
from chat.tools.identity import derive_tools_secret
from chat.tools.service import ToolService
from chat.ws.sockets import Sockets
from storage.conversations import purge_deleted_conversations
from storage.database import create_database, prepare

log = logging.getLogger(__name__)


# A purge is one DELETE: bounded, so a stuck database cannot hold shutdown.
PURGE_DEADLINE_S = 2.0
# After Hypercorn has stopped, the pool gets this long to close its connections.
DISCONNECT_DEADLINE_S = 2.0


async def sweep_deleted(services: Services) -> None:
    """Purge soft-deleted conversations whose retention has passed, every `sweep_interval_s`."""
    while True:
        try:
            # Shielded, within a deadline: a query cancelled half-way can leave its connection
            # broken (databases #457), and shutdown can wait for one short statement.
            with anyio.fail_after(PURGE_DEADLINE_S, shield=True):
                purged = await purge_deleted_conversations(services.db)
            if purged:
                log.info("purged %d deleted conversations past their retention", purged)
        except Exception:  # the database may be briefly away; try again next round
            log.exception("sweeping deleted conversations failed")
        await anyio.sleep(services.settings.sweep_interval_s)


def tool_service(settings: Settings) -> ToolService:
    """The MCP tool service for the configured servers (each starts on first use)."""
    return ToolService(
        configured_servers(settings),
        tools_secret=derive_tools_secret(settings.jwt_secret),
        call_timeout_s=settings.mcp_call_timeout_s,
    )


def open_metrics(settings: Settings, provider: Provider | None) -> Metrics | None:
    """The metrics, when they are served (`METRICS_ENABLED` or `METRICS_BIND`); otherwise
    nothing is counted at all."""
    if not (settings.metrics_enabled or settings.metrics_bind):
        return None
    # A provider handed in (benchmarks, tests) is not the configured one.
    return Metrics(settings.assistant_provider if provider is None else "custom")


def open_throttle(settings: Settings, metrics: Metrics | None) -> Throttle:
    """The rate limits of the settings, counted in Redis when `REDIS_URL` is set."""
    rules = Rules.from_settings(settings)
    if metrics is None:
        return Throttle(rules, redis_url=settings.redis_url, timeout_s=settings.redis_timeout_s)
    return Throttle(
        rules,
        redis_url=settings.redis_url,
        timeout_s=settings.redis_timeout_s,
        on_reject=metrics.rejected,
        on_storage_error=metrics.limit_storage_failed,
    )


def shutdown_budget_s(settings: Settings) -> float:
    """The longest a stop can take before every event stream is closed (docs/design.md).

    Running replies get `SHUTDOWN_GRACE_S` to finish; then they are cancelled and each stores
    what it has within its store deadline; with Redis, what they published is flushed to it
    within `REDIS_TIMEOUT_S`. Hypercorn's `graceful_timeout` must exceed this.
    """
    flush_s = settings.redis_timeout_s if settings.redis_url else 0.0
    return settings.shutdown_grace_s + actor_config(settings).store_deadline_s + flush_s


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


def bridge_config(settings: Settings) -> BridgeConfig:
    return BridgeConfig(
        timeout_s=settings.redis_timeout_s,
        ping_s=settings.redis_ping_s,
        reconnect_max_s=settings.redis_reconnect_max_s,
        queue_size=settings.redis_queue_size,
        retained=settings.events_retained,
        retained_s=settings.events_retained_s,
    )


@asynccontextmanager
async def open_bridge(settings: Settings, hub: Hub) -> AsyncIterator[Bridge | None]:
    """The Redis bridge's client when `REDIS_URL` is set (closed on exit), else `None`."""
    if not settings.redis_url:
        yield None
        return
    config = bridge_config(settings)
    client = connect_redis(settings.redis_url, config.timeout_s)
    try:
        yield Bridge(hub, client, config)
    finally:
        with anyio.move_on_after(config.timeout_s, shield=True):
            await client.aclose()


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
    metrics = open_metrics(settings, provider)
    db = create_database(
        settings.database,
        pool_size=settings.database_pool_size,
        on_query=metrics.query if metrics is not None else None,
    )
    await db.connect()
    throttle = open_throttle(settings, metrics)
    try:
        await prepare(db)
        hub = Hub(hub_limits(settings))
        if metrics is not None:
            hub.observer = metrics
        tools = tool_service(settings)
        async with (
            open_provider(settings, provider, tools) as provider,
            open_bridge(settings, hub) as bridge,
            anyio.create_task_group() as tg,
        ):
            # The MCP servers' owner tasks: each session is entered and exited in its own.
            await tg.start(tools.run)
            if bridge is not None:
                # Started once its first connection was tried: Redis being away does not stop
                # the instance from starting (it serves its own clients until Redis returns).
                await tg.start(bridge.run)
            registry = Registry(
                store=DatabaseStore(db),
                provider=provider,
                hub=hub,
                config=actor_config(settings),
                observer=metrics,
            )
            if metrics is not None:
                metrics.watch(registry, hub, db, bridge)
            if bridge is not None:
                # One actor per conversation across the instances (actors/lease.py).
                cluster = make_cluster(bridge, db, settings.actor_lease_s, actor_config(settings))
                registry.join(cluster)
                await tg.start(cluster.run)
            # The actors live in the registry's task group, in a task of its own, so that
            # cancelling them at the end of the grace period cancels nothing else.
            await tg.start(registry.run)
            services = Services(
                settings=settings,
                db=db,
                tokens=Tokens.from_settings(settings),
                passwords=Passwords.from_settings(settings),
                users=user_cache(settings.auth_cache_s),
                hub=hub,
                registry=registry,
                bridge=bridge,
                sockets=Sockets(settings.ws_max_sockets_per_user),
                tools=tools,
                throttle=throttle,
                metrics=metrics,
            )
            if metrics is not None:
                services.passwords.on_hash = metrics.password_hashed
            stopping, stopped = anyio.Event(), anyio.Event()

            async def shut_down() -> None:
                """Stop once, in order, within `shutdown_budget_s`; a second call waits."""
                with anyio.CancelScope(shield=True):
                    if stopping.is_set():
                        await stopped.wait()
                        return
                    stopping.set()
                    # 1. No new commands; running replies get the grace period to finish.
                    with anyio.move_on_after(settings.shutdown_grace_s):
                        await registry.drain()
                    # 2. Past it, replies are cancelled and store what they have, each within
                    # its store deadline (the actors shield their writes).
                    registry.cancel()
                    await registry.stopped.wait()
                    # 3. What the replies published reaches Redis (or, past its deadline, only
                    # this instance's clients).
                    if bridge is not None:
                        with anyio.move_on_after(bridge.config.timeout_s):
                            await bridge.flush()
                    # 4. Every event stream ends, so Hypercorn is not held up by open ones.
                    hub.close()
                    # 5. The MCP servers stop (stdin closed, then SIGTERM, then SIGKILL).
                    await tools.close()
                    stopped.set()

            async def shut_down_on_stop(stop: anyio.Event) -> None:
                await stop.wait()
                log.info("stopping: finishing replies, then closing event streams")
                await shut_down()

            tg.start_soon(sweep_deleted, services)
            tg.start_soon(keep_streams_alive, hub, settings.sse_keepalive_s)
            tg.start_soon(services.sockets.sweep)
            if stop is not None:
                tg.start_soon(shut_down_on_stop, stop)
            try:
                yield services
            finally:
                await shut_down()
                tg.cancel_scope.cancel()
    finally:
        await throttle.aclose()
        with anyio.move_on_after(DISCONNECT_DEADLINE_S, shield=True):
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


async def serve(
    settings: Settings,
    config: Config,
    provider: Provider | None = None,
    sockets: BoundSockets | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting, finish and close everything.

    `sockets` are ones already bound (by `parley serve --workers`, shared by every worker).
    """
    hypercorn_fixes.apply()
    budget = shutdown_budget_s(settings)
    if config.graceful_timeout <= budget:
        log.warning(
            "Hypercorn's graceful_timeout (%gs) is not above the shutdown budget (%gs: "
            "SHUTDOWN_GRACE_S + the store deadline + the Redis flush): a stop may cut replies off",
            config.graceful_timeout,
            budget,
        )
    stop = anyio.Event()
    async with running_services(settings, stop, provider) as services:
        app = create_app(services)
        tune_garbage_collector()
        # Bound before "serving on" is logged: a port in use fails here, before serving.
        if sockets is None:
            sockets = config.create_sockets()

        async def serve_app() -> None:
            # Hypercorn's asyncio TaskGroup on Python 3.11 leaves a cancel request on the task
            # that ran it; in a task of its own that request dies with the task instead of
            # surfacing as a stray CancelledError in the task groups of this one.
            await worker_serve(
                wrap_app(app, config.wsgi_max_body_size, None),
                config,
                sockets=sockets,
                shutdown_trigger=stop.wait,
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, stop)
            if services.metrics is not None and settings.metrics_bind:
                # Its own small listener, stopped by the same `stop` (within a second).
                tg.start_soon(serve_metrics, services.metrics, settings.metrics_bind, stop)
            log.info("serving on %s", ", ".join(config.bind))
            tg.start_soon(serve_app)
    log.info("stopped")
