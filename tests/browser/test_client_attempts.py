"""livefeed.js in Chromium: what an attempt to connect covers and what it counts. The
connect timeout covers a token function that never settles; only attempts that reached
no server count toward falling back to SSE; `pingTimeout: 0` turns the ping check off;
an SSE stream gone silent is dropped; and with no script URL to go by, the default
server is the page's origin."""

from __future__ import annotations

import os
import re
import signal
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocketRoute

from tests.conftest import StartServer
from tests.support.browser import TIMEOUT_MS, pause_clock
from tests.support.server import ServerProcess
from tests.support.site import StaticSite

pytestmark = pytest.mark.browser

START = """([url, options]) => {
  window.log = { states: [] };
  window.feed = new LiveFeed({ url, tools: ["flask"], history: 0, ...options })
    .on("state", (s) => log.states.push([s.state, s.transport, s.code, s.reason]))
    .connect();
}"""


def load_client(page: Page, server: ServerProcess, site: StaticSite, path: str = "/feed.html"):
    html = f'<!doctype html><script src="{server.url}/static/livefeed.js"></script>'
    page.goto(site.add(path, html))


def start_feed(page: Page, server: ServerProcess, options: dict[str, Any]) -> None:
    page.evaluate(START, [f"{server.url}/", options])


def wait_for(page: Page, expression: str, arg: Any = None, timeout: float = TIMEOUT_MS) -> None:
    page.wait_for_function(expression, arg=arg, timeout=timeout)


def test_a_token_function_that_never_settles_times_out_and_is_retried(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    """The connect timeout started only once the token had come: the feed stayed
    `connecting` for good."""
    pause_clock(page)
    load_client(page, feed_server, site)
    page.evaluate("() => { window.tokenCalls = 0; }")
    options = {"connectTimeout": 5000, "transport": "websocket"}
    page.evaluate(
        START.replace("...options", "...options, token: () => { tokenCalls++; "
                      "return new Promise(() => {}); }"),
        [f"{feed_server.url}/", options],
    )  # fmt: skip
    wait_for(page, "() => tokenCalls === 1")
    page.clock.run_for(5000)
    wait_for(page, "() => log.states.some(([state]) => state === 'reconnecting')")
    page.clock.run_for(1000)  # the first retry waits below 1 s
    wait_for(page, "() => tokenCalls === 2")


def test_a_server_that_closes_before_welcome_does_not_send_an_auto_feed_to_sse(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    """Three closes with a code of the server's (1011 here; 1001 while it drains, 4029)
    counted as three blocked attempts, and the feed left WebSocket for SSE for good,
    though WebSocket got through every time."""
    closes: list[str] = []

    def close_three_times(ws: WebSocketRoute) -> None:
        if len(closes) < 3:
            closes.append(ws.url)
            ws.close(code=1011, reason="internal error")
        else:
            ws.connect_to_server()

    page.route_web_socket(re.compile(r"/ws(\?|$)"), close_three_times)
    load_client(page, feed_server, site)
    start_feed(page, feed_server, {"transport": "auto"})
    # Three backoffs in real time (full jitter: below 1 s, 2 s, then 4 s).
    wait_for(page, "() => feed.state === 'open'", timeout=3 * TIMEOUT_MS)
    assert len(closes) == 3
    assert page.evaluate("() => feed.transport") == "websocket"


def test_ping_timeout_zero_turns_the_ping_check_off(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    """Documented as off; every ping failed at once instead, and the feed reconnected
    every pingInterval."""
    pause_clock(page)
    load_client(page, feed_server, site)
    start_feed(page, feed_server, {"transport": "websocket", "pingInterval": 500, "pingTimeout": 0})
    wait_for(page, "() => feed.state === 'open'")
    page.clock.run_for(5000)  # ten ping intervals
    assert page.evaluate("() => log.states.map(([state]) => state)") == ["connecting", "open"]


def test_without_a_script_url_the_default_server_is_the_pages_origin(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    """livefeed.js imported as a module has no currentScript; the fallback was the
    page's own URL with "/" appended (/app/page.html/ws)."""
    load_client(page, feed_server, site, "/app/page.html")
    origin = page.evaluate("() => location.origin")
    url = page.evaluate("() => { LiveFeed.defaultUrl = null; return new LiveFeed({}).url; }")
    assert url == f"{origin}/"


def test_an_sse_stream_that_goes_silent_is_dropped_and_retried(
    page: Page, start_server: StartServer, site: StaticSite
):
    """EventSource sees no comment lines and notices a dead TCP connection only when it
    fails: a stream whose server stopped sending (here the process is stopped, its
    socket left open) looked open for good. The server's `event: ping`s are its
    heartbeat: none for two intervals and 5 s, and the feed reconnects."""
    server = start_server({"LIVEFEED_SSE_KEEPALIVE": "1"})
    pause_clock(page)
    load_client(page, server, site)
    start_feed(page, server, {"transport": "sse"})
    wait_for(page, "() => feed.state === 'open'")
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        page.clock.run_for(40_000)  # past two default intervals (15 s) and the slack
        wait_for(page, "() => log.states.some((s) => s[3] === 'sse stream silent')")
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def test_subscribes_dropped_over_the_servers_frame_rate_are_sent_again(
    page: Page, start_server: StartServer, site: StaticSite
):
    """The server answers the first frame over its rate with `rate_limited` and drops
    the rest unanswered: those tools stayed unsubscribed until the next connection."""
    # Burst 3: t1-t3 pass, t4 is answered rate_limited, t5 dropped (two over the rate,
    # within the 3 forgiven before a 4029).
    server = start_server({"LIVEFEED_FRAME_RATE": "1", "LIVEFEED_FRAME_BURST": "3"})
    load_client(page, server, site)
    page.evaluate(
        """async (url) => {
          window.log = { subscribed: [], errors: [] };
          window.feed = new LiveFeed({ url, tools: [], history: 0, transport: "websocket" })
            .on("subscribed", (f) => log.subscribed.push(f.tool))
            .on("error", (e) => log.errors.push(e.code));
          await new Promise((open) => {
            feed.on("state", (s) => s.state === "open" && open()).connect();
          });
          for (const tool of ["t1", "t2", "t3", "t4", "t5"]) {  // one frame each
            feed.subscribe(tool);
            await new Promise((r) => setTimeout(r, 0));
          }
        }""",
        f"{server.url}/",
    )
    wait_for(page, "() => log.errors.includes('rate_limited')")
    wait_for(page, "() => new Set(log.subscribed).size === 5")
    assert sorted(set(page.evaluate("() => log.subscribed"))) == ["t1", "t2", "t3", "t4", "t5"]


def test_an_sse_request_the_server_refuses_is_reported_not_retried_silently(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    """EventSource gives no status: a stream over the server's tool limit (400) was
    retried for ever and the page never learned why."""
    load_client(page, feed_server, site)
    tools = [f"t{i}" for i in range(101)]  # the server takes at most 100 per stream
    page.evaluate(
        """([url, tools]) => {
          window.log = { errors: [] };
          window.feed = new LiveFeed({ url, tools, history: 0, transport: "sse" })
            .on("error", (e) => log.errors.push(e))
            .connect();
        }""",
        [f"{feed_server.url}/", tools],
    )
    wait_for(page, "() => log.errors.length > 0", timeout=3 * TIMEOUT_MS)
    [error] = page.evaluate("() => log.errors")
    assert (error["code"], error["status"]) == ("too_many_subscriptions", 400)
    assert error["field"] == "tools" and error["message"]
