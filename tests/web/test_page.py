"""The chat page in headless Chromium against a real server: what a customer does with it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.server import Server
from tests.tokens import claims, sign
from tests.web.conftest import SECRET, serving, tab, web_env
from tests.web.pages import (
    ARTICLE,
    QUESTION,
    ask,
    assert_page_equals_store,
    assistant,
    connected,
    conversation_id,
    new_email,
    register,
    sign_in,
    stored_messages,
    token,
    wait_for_growth,
)


@pytest.fixture(name="server", scope="module")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("web")
    with serving(web_env(tmp), tmp) as server:
        yield server


def test_a_customer_asks_and_watches_the_reply_stream_in(browser: Browser, server: Server) -> None:
    email = new_email()
    with tab(browser) as first:
        register(first.page, server.url, email, name="Ann")
        expect(first.page.locator("#who")).to_have_text("Ann")
        first.page.get_by_role("button", name="Sign out").click()
        expect(first.page.locator("#auth-message")).to_have_text("You have signed out.")
        assert first.page.evaluate("sessionStorage.length") == 0
    with tab(browser) as watched:
        page = watched.page
        requested: list[str] = []
        sockets: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.on("websocket", lambda socket: sockets.append(socket.url))
        sign_in(page, server.url, email)
        ask(page, QUESTION)
        conversation = conversation_id(page)
        # The reply grows token by token while it streams, with a Stop button meanwhile.
        reply = assistant(page)
        expect(reply).to_have_attribute("data-status", "streaming")
        expect(page.get_by_role("button", name="Stop")).to_be_visible()
        seen = wait_for_growth(page, 0)
        wait_for_growth(page, seen)
        expect(reply).to_have_attribute("data-status", "complete")
        expect(page.get_by_role("button", name="Stop")).to_be_hidden()
        link = reply.get_by_role("link", name="How to reset a forgotten password")
        expect(link).to_have_attribute("href", ARTICLE)
        assert_page_equals_store(server.url, page, conversation)
        # The auto-title reaches the list and the heading.
        expect(page.locator("#conversation-title")).to_have_text(QUESTION)
        expect(page.locator(".conversation-item .title")).to_have_text([QUESTION])
        # The token is in this tab's sessionStorage only, and in no URL but the socket's.
        assert page.evaluate("localStorage.length") == 0
        assert requested and not [url for url in requested if token(page) in url]
        assert sockets == [f"ws://{server.url.removeprefix('http://')}/ws/chat?token={token(page)}"]
        # Opened again from its address, the conversation shows what was stored.
        page.reload()
        connected(page)
        expect(assistant(page)).to_have_attribute("data-status", "complete")
        assert_page_equals_store(server.url, page, conversation)
        assert watched.errors == []


def test_stop_keeps_the_partial_reply_marked_cancelled_and_retry_asks_again(
    browser: Browser, server: Server
) -> None:
    with tab(browser) as watched:
        page = watched.page
        register(page, server.url, new_email())
        box = page.get_by_label("Your message")
        # Keyboard only: Shift+Enter is a new line, Enter sends, Escape stops the reply.
        box.type("How do I reset")
        box.press("Shift+Enter")
        box.type("my password?")
        assert box.input_value() == "How do I reset\nmy password?"
        box.press("Enter")
        conversation = conversation_id(page)
        expect(page.locator(".message.user .text")).to_have_text("How do I reset\nmy password?")
        wait_for_growth(page, 10)
        page.keyboard.press("Escape")
        reply = assistant(page)
        expect(reply).to_have_attribute("data-status", "cancelled")
        expect(reply.locator(".status")).to_have_text("Stopped")
        [_, stored] = stored_messages(server.url, page, conversation)
        assert stored["status"] == "cancelled"
        assert 10 < len(stored["content"]) < 300
        assert_page_equals_store(server.url, page, conversation)
        # Retry asks the same question again; this time the reply is left to finish.
        reply.get_by_role("button", name="Retry").click()
        expect(page.locator(".message")).to_have_count(4)
        expect(assistant(page)).to_have_attribute("data-status", "complete")
        assert_page_equals_store(server.url, page, conversation)
        assert watched.errors == []


def test_an_expired_token_returns_to_sign_in_with_a_message(
    browser: Browser, server: Server
) -> None:
    with tab(browser) as watched:
        page = watched.page
        register(page, server.url, new_email())
        me = httpx.get(server.url + "/auth/me", headers={"Authorization": f"Bearer {token(page)}"})
        # A token that ends in two seconds: the page starts with it, then the socket hears
        # `token_expired` and the page goes back to sign-in.
        short = sign(
            {"alg": "HS256", "typ": "JWT"},
            claims(me.json()["id"], exp=int(time.time()) + 2),
            SECRET,
        )
        page.evaluate("token => sessionStorage.setItem('parley.token', token)", short)
        page.reload()
        connected(page)
        expect(page.locator("#auth-view")).to_be_visible(timeout=10_000)
        expect(page.locator("#auth-message")).to_have_text(
            "Your session has expired. Please sign in again."
        )
        assert page.evaluate("sessionStorage.getItem('parley.token')") is None


def test_markup_in_messages_stays_text_under_a_strict_csp(browser: Browser, server: Server) -> None:
    markup = ["<img src=x onerror=alert(1)>", "<script>alert(2)</script><b>bold</b>"]
    with tab(browser) as watched:
        page = watched.page
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        register(page, server.url, new_email())
        for n, text in enumerate(markup, start=1):
            ask(page, text)
            expect(page.locator(".message.user .text").last).to_have_text(text)
            expect(page.locator(".message.assistant")).to_have_count(n)
            expect(assistant(page)).to_have_attribute("data-status", "complete")
        conversation = conversation_id(page)
        assert page.locator("#message-list img, #message-list script, #message-list b").count() == 0
        assert_page_equals_store(server.url, page, conversation)
        assert dialogs == []
        assert watched.errors == []
    for path in ("/", f"/c/{conversation}", "/web/app.js", "/web/style.css"):
        headers = httpx.get(server.url + path).headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp, path
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"


def test_a_second_tab_follows_renames_and_replies_and_a_stranger_sees_none(
    browser: Browser, server: Server
) -> None:
    email = new_email()
    with tab(browser) as a, tab(browser) as b, tab(browser) as stranger:
        register(a.page, server.url, email)
        sign_in(b.page, server.url, email)
        register(stranger.page, server.url, new_email())
        ask(a.page, QUESTION)
        conversation = conversation_id(a.page)
        # The new conversation appears in the other tab's list as it happens.
        in_b = b.page.locator(f'[data-conversation-id="{conversation}"] .title')
        expect(in_b).to_have_text(QUESTION)
        expect(assistant(a.page)).to_have_attribute("data-status", "complete")
        in_b.click()
        expect(b.page).to_have_url(f"{server.url}/c/{conversation}")
        expect(b.page.locator(".message")).to_have_count(2)
        # A renames (through its dialog): B's list and heading follow.
        a.page.get_by_role("button", name="Rename").click()
        a.page.get_by_label("Title").fill("Locked out")
        a.page.get_by_role("button", name="Save").click()
        expect(a.page.locator("#conversation-title")).to_have_text("Locked out")
        expect(in_b).to_have_text("Locked out")
        expect(b.page.locator("#conversation-title")).to_have_text("Locked out")
        # A asks again: B sees the question and the reply stream in, the same as stored.
        ask(a.page, "And if the reset email never arrives?")
        expect(b.page.locator(".message.user .text").last).to_have_text(
            "And if the reset email never arrives?"
        )
        expect(assistant(b.page)).to_have_attribute("data-status", "streaming")
        expect(assistant(b.page)).to_have_attribute("data-status", "complete")
        expect(a.page.locator(".message")).to_have_count(4)
        expect(assistant(a.page)).to_have_attribute("data-status", "complete")
        assert_page_equals_store(server.url, a.page, conversation)
        assert_page_equals_store(server.url, b.page, conversation)
        # The stranger saw none of it, and cannot open it by its address.
        expect(stranger.page.locator(".conversation-item")).to_have_count(0)
        stranger.page.goto(f"{server.url}/c/{conversation}")
        expect(stranger.page.locator("#chat-error")).to_have_text(
            "That conversation does not exist or is not yours."
        )
        expect(stranger.page).to_have_url(f"{server.url}/")
        assert stranger.page.locator(".message").count() == 0
        # Deleting asks first; then it leaves both tabs.
        a.page.get_by_role("button", name="Delete").click()
        a.page.locator("#delete-dialog").get_by_role("button", name="Delete").click()
        expect(a.page.locator(".conversation-item")).to_have_count(0)
        expect(b.page.locator(".conversation-item")).to_have_count(0)
        expect(b.page.locator("#chat-error")).to_have_text("This conversation was deleted.")
        assert a.errors == [] and b.errors == []


def test_screenshots_of_the_main_screens(browser: Browser, server: Server, tmp_path: Path) -> None:
    """Desktop and 360 px wide, light and dark, each checked to fit (nothing wider than the
    window). Saved where `PARLEY_SCREENSHOTS` says (the README's come from
    `PARLEY_SCREENSHOTS=docs/screenshots`), else into the test's own folder: a run does not
    change the checkout (each shows the time of its messages)."""
    shots = Path(os.environ.get("PARLEY_SCREENSHOTS") or tmp_path).resolve()
    shots.mkdir(parents=True, exist_ok=True)
    desktop = {"width": 1280, "height": 800}
    phone = {"width": 360, "height": 740}
    with tab(browser, viewport=desktop) as watched:
        page = watched.page
        page.goto(server.url + "/")
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        page.screenshot(path=shots / "sign-in-desktop-light.png")
        page.emulate_media(color_scheme="dark")
        page.set_viewport_size(phone)
        page.screenshot(path=shots / "sign-in-phone-dark.png")
        page.emulate_media(color_scheme="light")
        page.set_viewport_size(desktop)
        register(page, server.url, new_email(), name="Ann")
        ask(page, QUESTION)
        expect(assistant(page)).to_have_attribute("data-status", "complete")
        expect(page.locator("#conversation-title")).to_have_text(QUESTION)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            for name, size in (("desktop", desktop), ("phone", phone)):
                page.set_viewport_size(size)
                fits = "document.documentElement.scrollWidth <= window.innerWidth"
                assert page.evaluate(fits), f"{name} is wider than the window"
                page.screenshot(path=shots / f"chat-{name}-{scheme}.png")
        # On a phone the list is a panel behind the menu button.
        expect(page.locator("#sidebar")).to_be_hidden()
        page.get_by_role("button", name="Show conversations").click()
        expect(page.locator("#sidebar")).to_be_visible()
        page.screenshot(path=shots / "conversations-phone-dark.png")
        assert watched.errors == []


def test_long_lists_load_as_they_scroll(browser: Browser, server: Server) -> None:
    with tab(browser) as watched:
        page = watched.page
        register(page, server.url, new_email())
        headers = {"Authorization": f"Bearer {token(page)}"}
        base = server.url + "/api/v1/chat/conversations"
        with httpx.Client(headers=headers, timeout=30) as api:
            ids = [api.post(base, json={"title": f"Order {n}"}).json()["id"] for n in range(25)]
            long = ids[0]
            for n in range(30):  # 60 messages; a synchronous POST answers at full speed
                answer = api.post(f"{base}/{long}/messages", json={"message": f"Question {n}"})
                assert answer.status_code == 201, answer.text
        page.reload()
        connected(page)
        # Conversations: newest first, the first page, then the rest as the list scrolls.
        items = page.locator(".conversation-item")
        expect(items.first.locator(".title")).to_have_text("Order 0")  # its messages are newest
        expect(items.nth(1).locator(".title")).to_have_text("Order 24")
        page.locator("#conversations-end").scroll_into_view_if_needed()
        expect(items).to_have_count(25)
        # Messages: the last 50, then the older ones when scrolled to the top.
        items.first.locator("a").click()
        messages = page.locator(".message")
        expect(messages).to_have_count(50)
        expect(messages.first.locator(".text")).to_have_text("Question 5")
        expect(page.locator("#messages-start")).to_be_hidden()
        page.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
        expect(messages).to_have_count(60)
        expect(messages.first.locator(".text")).to_have_text("Question 0")
        expect(page.locator("#messages-start")).to_be_visible()
        assert_page_equals_store(server.url, page, long)
        assert watched.errors == []


def test_low_confidence_tools_tickets_and_unsafe_links_as_the_page_shows_them(
    browser: Browser, server: Server
) -> None:
    with tab(browser) as watched:
        page = watched.page
        register(page, server.url, new_email())
        ask(page, "Where can I find a sock?")  # a weak match (confidence about 0.26)
        reply = assistant(page)
        expect(reply).to_have_attribute("data-status", "complete")
        expect(reply.locator(".confidence")).to_contain_text("Low confidence")
        # Tool events and ticket references come from the tools (being built); the rendering
        # is checked on the page's own module with the shapes of docs/api.md.
        shown = page.evaluate(
            """async () => {
                const render = await import('/web/render.js');
                const item = render.messageElement('m1', 'assistant');
                document.getElementById('message-list').append(item);
                render.addTool(item, 'create_ticket');
                render.toolResult(item, 'create_ticket', false);
                render.fillMessage(item, {
                    id: 'm1', role: 'assistant', content: 'Opened <b>T-7</b>',
                    created_at: '2026-11-26T10:00:00+00:00', status: 'complete',
                    confidence_score: 0.9, error: null,
                    entity_references: [{type: 'ticket', id: 't7', label: 'T-7'}],
                    entity_links: [
                        {title: 'Bad', url: 'javascript:alert(1)'},
                        {title: 'Article', url: 'https://help.example.com/articles/x'},
                    ],
                });
                return {
                    tools: item.querySelector('.tools').textContent,
                    links: Array.from(item.querySelectorAll('a'), a => a.href),
                    sources: item.querySelector('.sources').textContent,
                    text: item.querySelector('.text').textContent,
                    confidence: item.querySelector('.confidence').hidden,
                };
            }"""
        )
        assert shown == {
            "tools": "Used tool create_ticket (it failed)",
            "links": ["https://help.example.com/articles/x"],
            "sources": "Sources: BadArticleTicket T-7",
            "text": "Opened <b>T-7</b>",
            "confidence": True,
        }
        assert watched.errors == []


def test_a_ticket_the_assistant_opens_shows_its_tool_call_and_reference(
    browser: Browser, server: Server
) -> None:
    with tab(browser) as watched:
        page = watched.page
        register(page, server.url, new_email())
        ask(page, "I want to open a ticket about my refund")
        reply = assistant(page)
        # The first tool call starts Parley's MCP server process: slower on a busy machine.
        expect(reply).to_have_attribute("data-status", "complete", timeout=60_000)
        expect(reply.locator(".tool")).to_have_text(["Used tool parley__create_ticket"])
        [_, stored] = stored_messages(server.url, page, conversation_id(page))
        [ticket] = [r for r in stored["entity_references"] if r["type"] == "ticket"]
        # The ticket's address is an API route (it needs the token): named, not linked.
        expect(reply.locator(".sources")).to_contain_text(ticket["label"])
        assert reply.locator(".sources a").count() == 0
        assert_page_equals_store(server.url, page, conversation_id(page))
        assert watched.errors == []
