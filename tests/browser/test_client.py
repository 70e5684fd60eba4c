"""livefeed.js over SSE in Chromium: ``subscribed`` (presence, ``recovered`` and so
``gap``) and ``position`` (the cursor of a tool that has had no event since)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page

from tests.conftest import StartServer
from tests.support.browser import TIMEOUT_MS, publish_now
from tests.support.clients import story, unique_tool
from tests.support.server import ServerProcess
from tests.support.site import StaticSite

pytestmark = pytest.mark.browser

# One feed, and everything it emits, recorded in order on window.log.
START = """([url, tools]) => {
  window.log = { events: [], subscribed: [], gaps: [], states: [] };
  window.feed = new LiveFeed({ url, tools, history: 0, transport: "sse" })
    .on("event", (e) => log.events.push(e.id))
    .on("subscribed", (f) => log.subscribed.push(f))
    .on("gap", (g) => log.gaps.push(g))
    .on("state", (s) => log.states.push(s.state))
    .connect();
}"""


def client_page(page: Page, server: ServerProcess, site: StaticSite, *tools: str) -> None:
    """A page of another origin with livefeed.js and one SSE feed of ``tools``."""
    html = f'<!doctype html><script src="{server.url}/static/livefeed.js"></script>'
    page.goto(site.add("/client.html", html))
    page.evaluate(START, [f"{server.url}/", list(tools)])


def wait_for(page: Page, expression: str, arg: Any = None) -> None:
    page.wait_for_function(expression, arg=arg, timeout=TIMEOUT_MS)


def subscribed(page: Page, count: int) -> None:
    wait_for(page, "(n) => log.subscribed.length >= n", count)


def test_the_sse_position_is_the_cursor_of_a_tool_without_new_events(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    tool = unique_tool("pos")
    [old] = publish_now(feed_server.url, story([tool], "before the page"))
    client_page(page, feed_server, site, tool)
    subscribed(page, 1)
    first = page.evaluate("() => log.subscribed[0]")
    assert first == {"type": "subscribed", "tool": tool, "presence": 1}
    # History 0: nothing replayed, yet the stream's position becomes the cursor.
    wait_for(page, "([tool, id]) => feed.cursor(tool) === id", [tool, old["id"]])
    assert page.evaluate("(tool) => [feed.presence(tool).count, log.events]", tool) == [1, []]

    page.evaluate("() => feed.close()")
    [missed] = publish_now(feed_server.url, story([tool], "while the page was away"))
    page.evaluate("() => feed.connect()")
    subscribed(page, 2)
    assert page.evaluate("() => log.subscribed[1].recovered") is True
    [live] = publish_now(feed_server.url, story([tool], "after the resume"))
    wait_for(page, "(id) => log.events.includes(id)", live["id"])
    assert page.evaluate("() => [log.events, log.gaps]") == [[missed["id"], live["id"]], []]


def test_a_cursor_older_than_kept_history_is_a_gap_over_sse(
    page: Page, start_server: StartServer, site: StaticSite
):
    server = start_server({"LIVEFEED_HISTORY_SIZE": "3"})
    tool = unique_tool("gap")
    [seen] = publish_now(server.url, story([tool], "seen"))
    client_page(page, server, site, tool)
    wait_for(page, "([tool, id]) => feed.cursor(tool) === id", [tool, seen["id"]])
    page.evaluate("() => feed.close()")
    ids = [publish_now(server.url, story([tool], f"away {i}"))[0]["id"] for i in range(5)]
    page.evaluate("() => feed.connect()")

    wait_for(page, "(id) => log.events.includes(id)", ids[-1])
    assert page.evaluate("() => log.subscribed[1].recovered") is False
    assert page.evaluate("() => log.gaps") == [{"tool": tool, "since": seen["id"]}]
    assert page.evaluate("() => log.events") == ids[-3:]  # replayed from the oldest kept


def test_a_tool_with_no_event_at_all_resumes_without_loss_over_sse(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    tool, other = unique_tool("empty"), unique_tool("other")
    [old] = publish_now(feed_server.url, story([other], "an event of the other tool"))
    client_page(page, feed_server, site, tool, other)
    # A stream's subscriptions are made in order, so once the other tool's position is
    # here, any position of the empty tool would be too.
    wait_for(page, "([other, id]) => feed.cursor(other) === id", [other, old["id"]])
    page.evaluate("() => feed.close()")
    [missed] = publish_now(feed_server.url, story([tool], "the tool's first event"))
    page.evaluate("() => feed.connect()")
    subscribed(page, 4)
    [live] = publish_now(feed_server.url, story([tool], "after the resume"))
    wait_for(page, "(id) => log.events.includes(id)", live["id"])
    assert page.evaluate("() => log.events") == [missed["id"], live["id"]]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_presence_asked_for_by_a_later_owner_of_a_stream_is_turned_on(
    transport: str, page: Page, feed_server: ServerProcess, site: StaticSite
):
    """A page subscribed without presence, then a widget subscribed the same tool with
    it: only the owner was added, and presence frames never came."""
    tool = unique_tool("pres")
    html = f'<!doctype html><script src="{feed_server.url}/static/livefeed.js"></script>'
    page.goto(site.add("/presence.html", html))
    page.evaluate(
        """([url, tool, transport]) => {
          window.log = { subscribed: 0, full: [] };
          window.feed = new LiveFeed({ url, tools: [], history: 0, transport })
            .on("subscribed", () => log.subscribed++)
            .on("presence", (p) => p.users !== null && log.full.push(p.count))
            .connect();
          feed.subscribe(tool, { presence: false });
        }""",
        [f"{feed_server.url}/", tool, transport],
    )
    wait_for(page, "() => log.subscribed >= 1")
    page.evaluate("(tool) => feed.subscribe(tool, { presence: true, owner: 'widget' })", tool)
    wait_for(page, "() => log.full.length > 0")  # a full presence frame (it has users)
    assert page.evaluate("() => log.full[0]") == 1


def test_over_websocket_a_tool_without_new_events_resumes_from_its_position(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    """A stream subscribed with history 0 that got no event had no cursor: after a
    reconnect it was subscribed afresh, and what was published meanwhile was lost."""
    tool = unique_tool("wspos")
    [old] = publish_now(feed_server.url, story([tool], "before the page"))
    html = f'<!doctype html><script src="{feed_server.url}/static/livefeed.js"></script>'
    page.goto(site.add("/wspos.html", html))
    page.evaluate(
        """([url, tool]) => {
          window.log = { events: [], subscribed: 0 };
          window.feed = new LiveFeed({ url, tools: [tool], history: 0, transport: "websocket" })
            .on("event", (e) => log.events.push(e.id))
            .on("subscribed", () => log.subscribed++)
            .connect();
        }""",
        [f"{feed_server.url}/", tool],
    )
    wait_for(page, "([tool, id]) => feed.cursor(tool) === id", [tool, old["id"]])
    page.evaluate("() => feed.close()")
    [missed] = publish_now(feed_server.url, story([tool], "while the page was away"))
    page.evaluate("() => feed.connect()")
    wait_for(page, "(id) => log.events.includes(id)", missed["id"])
    assert page.evaluate("() => log.events") == [missed["id"]]
