"""The browser suite: Debian's chromium driven by Playwright against a real `parley serve`.

One browser per module (starting one costs about a second); each test opens its own contexts,
which share nothing (storage, sessionStorage, cookies). The browser runs with a fresh profile
(Playwright makes a temporary user-data-dir) and the flags that keep it off the network, which
is closed here: without them it stalls on connections it tries to make by itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

from tests.server import Server, parley, running_server, server_env

SECRET = "web-test-secret-" + "w" * 40
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Page conditions are waited on up to this long (a reply takes a few seconds at the pace set).
WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)


def chromium() -> str:
    """The browser executable: installed by .ci/run (apt), so CI fails rather than skips."""
    found = os.environ.get("PARLEY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(found):
        if os.environ.get("CI") == "true":
            pytest.fail(f"chromium is not installed ({found}); .ci/run installs it")
        pytest.skip("chromium is not installed (apt install chromium)")
    return found


@pytest.fixture(name="browser", scope="module")
def fixture_browser() -> Iterator[Browser]:
    executable = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def web_env(tmp: Path, **settings: str) -> dict[str, str]:
    """A server's environment: a known secret, and the local assistant's pace."""
    (tmp / "var").mkdir(exist_ok=True)
    defaults = {"jwt_secret": SECRET, "assistant_token_delay_ms": "15"}
    return server_env(tmp, **(defaults | settings))


@contextmanager
def serving(env: dict[str, str], tmp: Path, port: int | None = None) -> Iterator[Server]:
    """Migrate and serve; on the way out a clean stop and no traceback in the log."""
    parley("migrate", env=env)
    with running_server(env, tmp / "server.log", port=port) as server:
        yield server
        assert server.stop() == 0
    assert "Traceback" not in server.log_text()


class Watched:
    """A page with the errors it logged: console errors and uncaught exceptions."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


def new_page(context: BrowserContext) -> Watched:
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    return Watched(page)


@contextmanager
def tab(browser: Browser, **options: object) -> Iterator[Watched]:
    """A fresh context (its own storage, as another browser would have) with one page."""
    context = browser.new_context(**options)  # type: ignore[arg-type]
    try:
        yield new_page(context)
    finally:
        context.close()
