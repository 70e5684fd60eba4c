"""Chromium for the browser tests: Debian's /usr/bin/chromium, driven by Playwright.

Never ``playwright install``: the browser is the system's, so tests run offline and
exercise the Chromium a Debian user has.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from playwright.sync_api import Browser, Locator, Page, Playwright, expect

from tests.support.server import PUBLISH_KEY
from tests.support.timing import TIMEOUT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = TIMEOUT * 1000  # Playwright counts in milliseconds


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def publish_now(base_url: str, document: Any) -> list[dict[str, str]]:
    """POST /api/events from a plain (non-async) test; returns the ``{tool, id}`` list."""
    response = httpx.post(
        f"{base_url}/api/events",
        content=orjson.dumps(document),
        headers={"Authorization": f"Bearer {PUBLISH_KEY}"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 202, response.text
    events: list[dict[str, str]] = response.json()["events"]
    return events


def expect_ids(items: Locator, ids: list[str]) -> None:
    """Wait until ``items`` (elements with ``data-id``) are exactly ``ids``, in order."""
    expect(items).to_have_count(len(ids))
    for i, event_id in enumerate(ids):
        expect(items.nth(i)).to_have_attribute("data-id", event_id)


FIRST_RETRY_WINDOW_MS = 1000  # the client's first retry waits a random time below this


def pause_clock(page: Page) -> None:
    """Install Playwright's fake clock on ``page`` (before it loads) and stop it: the
    page's timers (backoff, timeouts, intervals) fire only when the test runs time on.
    Network events (WebSocket, EventSource) are not timers and arrive as usual."""
    now = datetime.now(UTC)
    page.clock.install(time=now)
    page.clock.pause_at(now + timedelta(minutes=1))  # ahead of the clock however slow we are


def first_retry_now(page: Page, state: Locator) -> None:
    """Wait until the client is ``reconnecting`` (its first retry is set), then run the
    paused clock through that retry's window, so it fires. Only for a retry that should
    succeed: were it to fail, the next one could fire within the same window."""
    expect(state).to_have_attribute("data-state", "reconnecting")
    page.clock.run_for(FIRST_RETRY_WINDOW_MS)
