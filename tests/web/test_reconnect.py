"""The page through a dropped connection and a server restart, mid-reply: it reconnects,
resumes from the last event it saw, and ends with exactly the stored reply."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, WebSocket, expect

from tests.server import Server, free_port, parley, running_server
from tests.web.conftest import serving, tab, web_env
from tests.web.pages import (
    QUESTION,
    ask,
    assert_page_equals_store,
    assistant,
    conversation_id,
    new_email,
    register,
    stored_messages,
    wait_for_growth,
)
from tests.web.proxy import CuttableProxy

# Slow enough that the reply is still streaming when the connection comes back.
PACE = {"assistant_token_delay_ms": "40"}
POSITION = re.compile(r"^[0-9a-f]+:[0-9]+$")


@pytest.fixture(name="server", scope="module")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("web")
    with serving(web_env(tmp, **PACE), tmp) as server:
        yield server


def streaming_text_longer_than(page: Page, length: int) -> str:
    """The reply's text, read while it is still streaming, once it is longer than `length`."""
    handle = page.wait_for_function(
        """length => {
            const replies = document.querySelectorAll('.message.assistant');
            const last = replies[replies.length - 1];
            if (!last || last.dataset.status !== 'streaming') return null;
            const text = last.querySelector('.text').textContent;
            return text.length > length ? text : null;
        }""",
        arg=length,
    )
    text: str = handle.json_value()
    return text


def test_a_cut_connection_resumes_from_the_last_event_without_losing_or_doubling_text(
    browser: Browser, server: Server
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with CuttableProxy(port) as proxy, tab(browser) as watched:
        page = watched.page
        sent: list[dict[str, object]] = []

        def record(socket: WebSocket) -> None:
            socket.on("framesent", lambda payload: sent.append(json.loads(payload)))

        page.on("websocket", record)
        register(page, proxy.url, new_email())
        ask(page, QUESTION)
        conversation = conversation_id(page)
        before = wait_for_growth(page, 20)
        reads: list[str] = []

        def read(request: Request) -> None:
            if request.method == "GET" and "/messages" in request.url:
                reads.append(request.url)

        page.on("request", read)
        proxy.cut()
        expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        expect(page.locator("#connection")).to_have_text("Reconnecting…")
        proxy.restore()
        expect(page.locator("#connection")).to_have_attribute("data-state", "open")
        # Read while still streaming: what streamed in before and after the cut, joined.
        streamed = streaming_text_longer_than(page, before + 40)
        expect(assistant(page)).to_have_attribute("data-status", "complete")
        [_, reply] = stored_messages(proxy.url, page, conversation)
        assert reply["content"].startswith(streamed), "text lost or doubled across the cut"
        assert_page_equals_store(proxy.url, page, conversation)
        # Resumed by replay from the last event id, not by reading the messages again.
        resumed = [f for f in sent if f["type"] == "subscribe" and "since" in f]
        assert resumed and POSITION.match(str(resumed[-1]["since"])), sent
        assert reads == []


def test_a_server_restart_mid_reply_ends_with_the_stored_reply(
    browser: Browser, tmp_path: Path
) -> None:
    # No grace: the stop cuts the reply, which is stored as it is (partial).
    env = web_env(tmp_path, shutdown_grace_s="0", **PACE)
    parley("migrate", env=env)
    port = free_port()
    with tab(browser) as watched:
        page = watched.page
        with running_server(env, tmp_path / "first.log", port=port) as first:
            register(page, first.url, new_email())
            ask(page, QUESTION)
            conversation = conversation_id(page)
            wait_for_growth(page, 20)
            assert first.stop() == 0
        expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        with running_server(env, tmp_path / "second.log", port=port) as second:
            expect(page.locator("#connection")).to_have_attribute("data-state", "open")
            reply = assistant(page)
            expect(reply).not_to_have_attribute("data-status", "streaming")
            # The new server's events start a new epoch: the page was told to reload (reset).
            assert_page_equals_store(second.url, page, conversation)
            [_, stored] = stored_messages(second.url, page, conversation)
            assert stored["status"] != "complete" and stored["content"]
            expect(page.locator(".message")).to_have_count(2)
            # And it goes on working.
            ask(page, "How do I track my order?")
            expect(page.locator(".message")).to_have_count(4)
            expect(assistant(page)).to_have_attribute("data-status", "complete")
            assert_page_equals_store(second.url, page, conversation)
            assert second.stop() == 0
    assert "Traceback" not in (tmp_path / "first.log").read_text()
    assert "Traceback" not in (tmp_path / "second.log").read_text()
