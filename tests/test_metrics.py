"""`/metrics` on the main listener: off by default; failures, crashes and cut-off subscribers
counted as they happen (the scripted provider fails and crashes on cue)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from actors.subscription import Subscription
from chat.settings import Settings
from tests.actors.scripted import ScriptedProvider
from tests.test_throttle import conversation, post, samples, serving, signed_in, value

pytestmark = pytest.mark.anyio


async def test_metrics_are_off_by_default(tmp_path: Path, sqlite_template: Path) -> None:
    defaults = Settings()
    assert not defaults.metrics_enabled and not defaults.metrics_bind
    async with serving(tmp_path, sqlite_template, metrics_enabled="false") as (client, found):
        assert found.metrics is None
        assert (await client.get("/metrics")).status_code == 404


async def test_failures_crashes_and_cut_offs_are_counted(
    tmp_path: Path, sqlite_template: Path
) -> None:
    provider = ScriptedProvider()
    async with serving(tmp_path, sqlite_template, provider) as (client, found):
        me = await signed_in(client, "eve@example.com")
        cid = await conversation(client, me)
        before = await samples(client)
        assert (await post(client, me, cid, "please fail")).status_code == 201
        assert (await post(client, me, cid, "please crash")).status_code == 503
        assert (await post(client, me, cid, "all good?")).status_code == 201
        # A subscriber that reads nothing, with room for one event: cut off as too slow.
        slow = Subscription(found.hub, uuid.UUID(cid), 1)
        found.hub.attach(slow)
        assert (await post(client, me, cid, "and again")).status_code == 201
        slow.close()
        after = await samples(client)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("parley_provider_errors_total", provider="custom", code="upstream_500") == 1
        assert moved("parley_actor_crashes_total") == 1
        assert moved("parley_subscribers_cut_off_total", reason="too_slow") == 1
        assert (
            moved("parley_reply_duration_seconds_count", provider="custom", status="complete") == 2
        )
        # The crash ended its reply as failed too (code internal_error).
        assert moved("parley_reply_duration_seconds_count", provider="custom", status="failed") == 2
        assert moved("parley_provider_errors_total", provider="custom", code="internal_error") == 1
        assert moved("parley_tokens_streamed_total", provider="custom") > 0
        route = "/api/v1/chat/conversations/<uuid:conversation_id>/messages"
        assert moved("parley_http_requests_total", method="POST", route=route, status="503") == 1
        assert value(after, "parley_actors", state="live") == 1
        assert value(after, "parley_replies_in_progress") == 0
