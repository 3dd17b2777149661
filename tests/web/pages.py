"""What a person does on the chat page, as steps the tests share, and what the API stored."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

QUESTION = "How do I reset my password?"
ARTICLE = "https://help.example.com/articles/reset-password"
PASSWORD = "password-1"
CONVERSATION_URL = re.compile(r"/c/([0-9a-f-]{36})$")


def new_email() -> str:
    return f"web-{uuid.uuid4().hex[:10]}@example.com"


def register(page: Page, url: str, email: str, name: str = "") -> None:
    """Create an account through the page; it signs in by itself."""
    page.goto(url + "/")
    page.get_by_role("button", name="Create one").click()
    form = page.locator("#register-form")
    if name:
        form.get_by_label("Your name (optional)").fill(name)
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password (at least 8 characters)").fill(PASSWORD)
    form.get_by_role("button", name="Create account").click()
    connected(page)


def sign_in(page: Page, url: str, email: str) -> None:
    page.goto(url + "/")
    form = page.locator("#sign-in-form")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_role("button", name="Sign in").click()
    connected(page)


def connected(page: Page) -> None:
    """Signed in, with the socket open."""
    expect(page.locator("#chat-view")).to_be_visible()
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")


def ask(page: Page, text: str) -> None:
    """Type a question and press Enter, as a person would."""
    box = page.get_by_label("Your message")
    box.fill(text)
    box.press("Enter")


def assistant(page: Page, index: int = -1) -> Locator:
    replies = page.locator(".message.assistant")
    return replies.last if index == -1 else replies.nth(index)


def conversation_id(page: Page) -> str:
    expect(page).to_have_url(CONVERSATION_URL)
    match = CONVERSATION_URL.search(page.url)
    assert match is not None
    return match[1]


def token(page: Page) -> str:
    value = page.evaluate("sessionStorage.getItem('parley.token')")
    assert isinstance(value, str) and value
    return value


def stored_messages(url: str, page: Page, conversation: str) -> list[dict[str, Any]]:
    """The conversation's messages as the REST API has them."""
    answer = httpx.get(
        f"{url}/api/v1/chat/conversations/{conversation}/messages",
        params={"limit": 200},
        headers={"Authorization": f"Bearer {token(page)}"},
    )
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def shown_messages(page: Page) -> list[dict[str, Any]]:
    """What the page shows of each message: id, role, status and the text exactly."""
    shown: list[dict[str, Any]] = page.eval_on_selector_all(
        "#message-list > .message",
        """items => items.map(item => ({
            id: item.dataset.messageId,
            role: item.dataset.role,
            status: item.dataset.status,
            content: item.querySelector('.text').textContent,
        }))""",
    )
    return shown


def assert_page_equals_store(url: str, page: Page, conversation: str) -> None:
    stored = [
        {k: m[k] for k in ("id", "role", "status", "content")}
        for m in stored_messages(url, page, conversation)
    ]
    shown = shown_messages(page)
    assert shown == stored, f"the page shows {shown}\nthe API has {stored}"


def reply_text(page: Page) -> str:
    text: str = assistant(page).locator(".text").evaluate("node => node.textContent")
    return text


def wait_for_growth(page: Page, than: int) -> int:
    """Wait until the streaming reply holds more than `than` characters; its length then."""
    page.wait_for_function(
        """than => {
            const replies = document.querySelectorAll('.message.assistant');
            const last = replies[replies.length - 1];
            return last && last.querySelector('.text').textContent.length > than;
        }""",
        arg=than,
    )
    return len(reply_text(page))
