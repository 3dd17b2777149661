"""Prometheus metrics (`prometheus-client`): what the service counts, and what it reads on scrape.

Counters and histograms are updated where things happen: requests (chat/access.py), replies,
crashes and cut-off subscribers (the actors' `Observer`, implemented here), rate-limit
rejections and Redis failures (chat/throttle.py), database statements (asyncpg's query
logger). Gauges are not kept at all: `States` reads them from the registry, the hub, the
bridge and the pool when `/metrics` is scraped, so no request pays for them.

Labels are bounded: route templates (never raw paths), methods, statuses, provider names,
error codes and limit names; never a user or conversation id. Each app has its own
`CollectorRegistry`, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.observer import ReplyReport

if TYPE_CHECKING:
    from databases import Database

    from actors.bridge import Bridge
    from actors.hub import Hub
    from actors.registry import Registry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REPLY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


@dataclass
class State:
    """A gauge read at scrape time: `read()` gives `{label values: value}` (or `{(): value}`)."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    read: Callable[[], dict[tuple[str, ...], float]]


@dataclass(eq=False)
class States(Collector):
    """Every gauge, read from its owner when scraped (a custom collector)."""

    states: list[State] = field(default_factory=list)

    def collect(self) -> Iterator[Metric]:
        for state in self.states:
            family = GaugeMetricFamily(state.name, state.documentation, labels=state.labels)
            for values, value in state.read().items():
                family.add_metric(list(values), value)
            yield family

    def describe(self) -> Iterable[Metric]:
        # Describing by collecting would read every owner when the collector is registered.
        return []


class Metrics:
    """The app's metrics and the actors' observer (`actors.observer.Observer`)."""

    def __init__(self, provider: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.provider = provider
        self.states = States()
        registry = self.registry
        ProcessCollector(registry=registry)
        registry.register(self.states)
        self.requests = Counter(
            "parley_http_requests",
            "HTTP requests and WebSocket handshakes answered, by route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "parley_http_request_duration_seconds",
            "Time from a request's arrival to its answer's status line (for event streams: "
            "until the stream opened), by route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.reply_seconds = Histogram(
            "parley_reply_duration_seconds",
            "Time to generate a reply, by provider and how it ended",
            ["provider", "status"],
            buckets=REPLY_BUCKETS,
            registry=registry,
        )
        self.first_token_seconds = Histogram(
            "parley_reply_first_token_seconds",
            "Time from the start of a reply to its first text, by provider",
            ["provider"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "parley_tokens_streamed",
            "Completion tokens streamed (text parts where the provider gives no count)",
            ["provider"],
            registry=registry,
        )
        self.provider_errors = Counter(
            "parley_provider_errors",
            "Replies that failed, by provider and error code",
            ["provider", "code"],
            registry=registry,
        )
        self.crashes = Counter(
            "parley_actor_crashes", "Conversation actors that crashed", registry=registry
        )
        self.cut_off = Counter(
            "parley_subscribers_cut_off",
            "Event subscribers ended by the server (too slow, a gap in the events), by reason",
            ["reason"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "parley_rate_limited",
            "Requests refused with 429 rate_limited, by limit",
            ["limit"],
            registry=registry,
        )
        self.limit_storage_errors = Counter(
            "parley_rate_limit_storage_errors",
            "Rate-limit checks Redis could not answer (counted in the instance instead)",
            registry=registry,
        )
        self.password_hashes = Counter(
            "parley_password_hashes",
            "argon2 hashes computed (registrations, sign-ins), each a CPU for tens of ms",
            registry=registry,
        )
        self.query_seconds = Histogram(
            "parley_db_query_duration_seconds",
            "Time of each PostgreSQL statement (not measured on SQLite)",
            buckets=QUERY_BUCKETS,
            registry=registry,
        )
        # Children looked up once per label set: `labels()` takes a lock and builds a key.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def request(self, method: str, route: str, status: int, seconds: float | None) -> None:
        """One answered request (`seconds` is `None` for a WebSocket handshake)."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = self.requests.labels(*labels), self.request_seconds.labels(*labels)
            self._request_children[key] = children
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    # The actors' observer.
    def reply_ended(self, report: ReplyReport) -> None:
        provider = self.provider
        self.reply_seconds.labels(provider, report.status).observe(report.duration_s)
        if report.first_token_s is not None:
            self.first_token_seconds.labels(provider).observe(report.first_token_s)
        if report.tokens:
            self.tokens.labels(provider).inc(report.tokens)
        if report.status == "failed":
            self.provider_errors.labels(provider, report.code or "unknown").inc()

    def actor_crashed(self) -> None:
        self.crashes.inc()

    def subscriber_cut_off(self, reason: str) -> None:
        self.cut_off.labels(reason).inc()

    def rejected(self, limit: str) -> None:
        self.rate_limited.labels(limit).inc()

    def limit_storage_failed(self) -> None:
        self.limit_storage_errors.inc()

    def password_hashed(self) -> None:
        self.password_hashes.inc()

    def query(self, seconds: float) -> None:
        self.query_seconds.observe(seconds)

    def add_state(
        self,
        name: str,
        documentation: str,
        read: Callable[[], dict[tuple[str, ...], float]],
        labels: tuple[str, ...] = (),
    ) -> None:
        """A gauge read when scraped. The hook for parts that come later: the MCP client
        (chat/tools/) adds `parley_mcp_servers{state}` here once it exists."""
        self.states.states.append(State(name, documentation, labels, read))

    def watch(self, registry: Registry, hub: Hub, db: Database, bridge: Bridge | None) -> None:
        """The gauges of the actors, the hub, the database pool and Redis."""
        from storage.database import pool_usage

        def actors() -> dict[tuple[str, ...], float]:
            stats = registry.stats()
            return {("live",): stats.live, ("running",): stats.running}

        self.add_state(
            "parley_actors",
            "Conversation actors: live (taking commands), running (including retiring ones)",
            actors,
            ("state",),
        )
        self.add_state(
            "parley_actor_mailbox_commands",
            "Commands waiting in the actors' mailboxes",
            lambda: {(): registry.stats().queued_commands},
        )
        self.add_state(
            "parley_replies_in_progress",
            "Replies being generated",
            lambda: {(): registry.stats().replying},
        )
        self.add_state(
            "parley_subscribers",
            "Event subscribers (SSE streams, WebSocket feeds)",
            lambda: {(): hub.stats().subscribers},
        )
        self.add_state(
            "parley_retained_event_bytes",
            "Bytes of events kept for replay in this process",
            lambda: {(): hub.stats().retained_bytes},
        )

        def pool() -> dict[tuple[str, ...], float]:
            usage = pool_usage(db)
            if usage is None:
                return {}
            in_use, size = usage
            return {("in_use",): in_use, ("open",): size}

        self.add_state(
            "parley_db_pool_connections",
            "PostgreSQL pool connections: in use, open (absent on SQLite)",
            pool,
            ("state",),
        )
        if bridge is not None:
            self.add_state(
                "parley_redis_up",
                "1 while the Redis bridge is connected, 0 while this instance serves alone",
                lambda: {(): 1.0 if bridge.up else 0.0},
            )
