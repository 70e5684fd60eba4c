"""Browser tests: real headless Chromium (Debian's) against real ``livefeed serve``.

One browser for the session; each test gets a fresh context (no shared cookies,
cache or storage) and a page that fails the test on any uncaught page error.
Every wait is a condition with a deadline derived from ``timing.TIMEOUT``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Dialog,
    Error,
    Page,
    expect,
    sync_playwright,
)

from tests.conftest import StartServer, redis_env
from tests.support.browser import TIMEOUT_MS, launch_chromium
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess
from tests.support.site import StaticSite

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


@dataclass
class PageLog:
    """What a page did that a test may assert on, recorded from its first moment."""

    errors: list[Error] = field(default_factory=list)  # uncaught exceptions
    dialogs: list[str] = field(default_factory=list)  # alert/confirm/prompt messages
    websockets: list[str] = field(default_factory=list)  # URLs of WebSockets opened


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def page(context: BrowserContext, page_log: PageLog) -> Iterator[Page]:
    page = context.new_page()

    def on_dialog(dialog: Dialog) -> None:
        page_log.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("pageerror", page_log.errors.append)
    page.on("dialog", on_dialog)
    page.on("websocket", lambda ws: page_log.websockets.append(ws.url))
    yield page
    assert not page_log.errors, f"uncaught errors in the page: {page_log.errors}"


@pytest.fixture
def feed_server(start_server: StartServer, redis_server: RedisServer, prefix: str) -> ServerProcess:
    """A Redis-backed ``livefeed serve`` of this test's own (unique key prefix)."""
    return start_server(redis_env(redis_server, prefix))


@pytest.fixture
def site() -> Iterator[StaticSite]:
    """Another origin (127.0.0.1, another port) for pages that embed livefeed."""
    with StaticSite() as site:
        yield site
