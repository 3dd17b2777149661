"""The page through a dropped connection and a server restart, mid-reply: it reconnects,
resumes from the last event it saw, and ends with exactly the stored reply."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, WebSocket, expect

from tests.server import Server, free_port, parley, running_server
from tests.web.conftest import tab, web_env
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


@dataclass
class Site:
    """A server that can be stopped and started again on the same port and database."""

    env: dict[str, str]
    tmp: Path
    stack: ExitStack
    port: int = field(default_factory=free_port)
    servers: list[Server] = field(default_factory=list)

    @property
    def server(self) -> Server:
        return self.servers[-1]

    def start(self) -> Server:
        log = self.tmp / f"server-{len(self.servers)}.log"
        self.servers.append(self.stack.enter_context(running_server(self.env, log, self.port)))
        return self.server


@pytest.fixture(name="site", scope="module")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("web")
    # No grace: a stop cuts a running reply, which is stored as it is (partial).
    env = web_env(tmp, shutdown_grace_s="0", **PACE)
    parley("migrate", env=env)
    with ExitStack() as stack:
        site = Site(env, tmp, stack)
        site.start()
        yield site
        assert site.server.stop() == 0
    for server in site.servers:
        assert "Traceback" not in server.log_text()


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
    browser: Browser, site: Site
) -> None:
    with CuttableProxy(site.port) as proxy, tab(browser) as watched:
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
    browser: Browser, site: Site
) -> None:
    with tab(browser) as watched:
        page = watched.page
        register(page, site.server.url, new_email())
        ask(page, QUESTION)
        conversation = conversation_id(page)
        wait_for_growth(page, 20)
        assert site.server.stop() == 0
        expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        url = site.start().url
        expect(page.locator("#connection")).to_have_attribute("data-state", "open")
        reply = assistant(page)
        expect(reply).not_to_have_attribute("data-status", "streaming")
        # The new server's events start a new epoch: the page was told to reload (reset).
        assert_page_equals_store(url, page, conversation)
        [_, stored] = stored_messages(url, page, conversation)
        assert stored["status"] != "complete" and stored["content"]
        expect(page.locator(".message")).to_have_count(2)
        # And it goes on working.
        ask(page, "How do I track my order?")
        expect(page.locator(".message")).to_have_count(4)
        expect(assistant(page)).to_have_attribute("data-status", "complete")
        assert_page_equals_store(url, page, conversation)
