"""The dashboard at ``/`` in Chromium: live items, a server restart, the SSE fallback."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from livefeed import Publisher
from tests.support.browser import (
    TIMEOUT_MS,
    expect_ids,
    first_retry_now,
    pause_clock,
    publish_now,
)
from tests.support.clients import story, unique_tool
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess

pytestmark = pytest.mark.browser

# Falling back to SSE waits out the client's backoff after each of the three refused
# WebSocket attempts (full jitter: below 1 s, 2 s, then 4 s), in real time.
FALLBACK_MS = 3 * TIMEOUT_MS


def open_dashboard(page: Page, server: ServerProcess, tool: str, transport: str) -> None:
    """Load ``/?tools=<tool>`` and wait until the column's subscription is live: the
    presence count, which comes with ``subscribed``, shows this page."""
    page.goto(f"{server.url}/?tools={tool}")
    state = page.get_by_test_id("state")
    expect(state).to_have_attribute("data-state", "open")
    expect(state).to_have_attribute("data-transport", transport)
    expect(page.get_by_test_id(f"presence-{tool}")).to_have_attribute("data-count", "1")
    # Every event the client emits, in order, to tell "shown once" from "deduplicated".
    page.evaluate(
        "() => { window.seen = []; livefeedDashboard.feed.on('event', (e) => seen.push(e.id)); }"
    )


def test_a_story_published_after_load_appears_without_a_reload(
    page: Page, feed_server: ServerProcess
):
    tool = unique_tool("dash")
    open_dashboard(page, feed_server, tool, "websocket")
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads
    items = page.get_by_test_id(f"items-{tool}").locator("> li")
    expect(items).to_have_count(0)

    [published] = publish_now(feed_server.url, story([tool], "Flask 4.0 is out", trending=True))

    expect_ids(items, [published["id"]])
    expect(items.first).to_have_attribute("data-kind", "story")
    expect(items.first.locator(".title")).to_have_text("Trending Flask 4.0 is out")
    expect(items.first.locator(".handle")).to_have_text("@laura_garcia")
    expect(page.get_by_test_id(f"epm-{tool}")).to_have_text("1")
    assert page.evaluate("() => [window.sameDocument, window.seen]") == [True, [published["id"]]]


def test_after_a_server_restart_the_page_resumes_with_nothing_missed(
    page: Page, feed_server: ServerProcess, redis_server: RedisServer, prefix: str
):
    # The client's backoff grows with every attempt that finds the server down, so
    # with the page's clock running, how long it takes to come back after the restart
    # depends on how long the restart took on this machine (measured: up to 9 s after
    # a 6 s restart; a slow CI box can exceed any fixed bound). So the page's timers
    # stand still while the server is down: the client schedules exactly one retry,
    # and the test runs the clock through that retry's window once the server is
    # back. The retry itself, the resume and the replay are the client's own.
    pause_clock(page)
    tool = unique_tool("restart")
    open_dashboard(page, feed_server, tool, "websocket")
    items = page.get_by_test_id(f"items-{tool}").locator("> li")
    state = page.get_by_test_id("state")
    [e1] = publish_now(feed_server.url, story([tool], "e1 before the restart"))
    expect_ids(items, [e1["id"]])

    feed_server.terminate()  # SIGTERM: the page gets close code 1001
    expect(state).to_have_attribute("data-state", "reconnecting")  # its retry is set
    with Publisher.from_url(redis_server.url, prefix=prefix) as publisher:
        e2 = publisher.story([tool], {"handle": "laura_garcia"}, "e2 while the server is down")
    feed_server.start_again()
    first_retry_now(page, state)

    expect(state).to_have_attribute("data-state", "open")
    expect_ids(items, [e2[tool], e1["id"]])  # newest first
    [e3] = publish_now(feed_server.url, story([tool], "e3 after the restart"))
    expect_ids(items, [e3["id"], e2[tool], e1["id"]])
    assert page.evaluate("() => window.seen") == [e1["id"], e2[tool], e3["id"]]


def test_with_websocket_blocked_the_dashboard_falls_back_to_sse(
    page: Page, feed_server: ServerProcess
):
    blocked: list[str] = []

    def refuse(ws: WebSocketRoute) -> None:
        blocked.append(ws.url)
        ws.close(code=1006, reason="blocked by a proxy")  # never reaches the server

    page.route_web_socket(re.compile(r"/ws(\?|$)"), refuse)
    tool = unique_tool("sse")
    # `sseAfter` (3) WebSocket attempts that never open, each followed by a backoff;
    # the third switches the transport, so the next attempt is SSE. (The page's clock
    # runs freely here: a run_for() could fire two of these retries at once, since
    # each refusal lands while it runs.)
    page.goto(f"{feed_server.url}/?tools={tool}")
    state = page.get_by_test_id("state")
    expect(state).to_have_attribute("data-transport", "sse", timeout=FALLBACK_MS)
    expect(state).to_have_attribute("data-state", "open")
    expect(state).to_have_text("Live · SSE")
    # The SSE stream's `subscribed` brings the presence count: the stream is live.
    expect(page.get_by_test_id(f"presence-{tool}")).to_have_attribute("data-count", "1")
    assert len(blocked) == 3

    [published] = publish_now(feed_server.url, story([tool], "Over Server-Sent Events"))
    items = page.get_by_test_id(f"items-{tool}").locator("> li")
    expect_ids(items, [published["id"]])
    expect(items.first.locator(".title")).to_have_text("Over Server-Sent Events")


def test_a_tool_named_all_and_the_firehose_column_are_each_labelled_by_their_own_heading(
    page: Page, feed_server: ServerProcess
):
    page.goto(f"{feed_server.url}/?tools=*,all")
    expect(page.locator('section.column[data-tool="*"]')).to_have_accessible_name("All tools")
    expect(page.locator('section.column[data-tool="all"]')).to_have_accessible_name("All all")
    duplicates = page.evaluate(
        "() => [...document.querySelectorAll('[id]')].map((e) => e.id)"
        ".filter((id, i, ids) => ids.indexOf(id) !== i)"
    )
    assert duplicates == []


def test_a_story_on_several_tools_counts_once_in_the_firehose_rate(
    page: Page, feed_server: ServerProcess
):
    """The firehose brings one copy per tool; the list showed one, the rate counted 3."""
    page.goto(f"{feed_server.url}/?tools=*")
    expect(page.get_by_test_id("state")).to_have_attribute("data-state", "open")
    expect(page.get_by_test_id("presence-*")).to_have_attribute("data-count", "1")
    page.evaluate(
        "() => { window.seen = []; livefeedDashboard.feed.on('event', (e) => seen.push(e.id)); }"
    )
    tools = [unique_tool("a"), unique_tool("b"), unique_tool("c")]
    publish_now(feed_server.url, story(tools, "One story, three tools"))
    page.wait_for_function("() => seen.length === 3", timeout=TIMEOUT_MS)
    # Two animation frames: the redraw the last copy scheduled has run.
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    expect(page.get_by_test_id("items-*").locator("> li")).to_have_count(1)
    expect(page.get_by_test_id("epm-*")).to_have_text("1")
