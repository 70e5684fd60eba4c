"""Chromium for the browser tests: Debian's /usr/bin/chromium, driven by Playwright.

Never ``playwright install``: the browser is the system's, so tests run offline and
exercise the Chromium a Debian user has.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from playwright.sync_api import Browser, Playwright

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
