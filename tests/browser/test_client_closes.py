"""livefeed.js in Chromium when the server refuses or ends something: the same outcome
over WebSocket and SSE (a forbidden tool, an expired token), the wait after 4029, and
1009 (a frame of ours too large) stopping rather than looping; and an event of an
old subscription still in flight when a tool is subscribed again."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, WebSocketRoute

from livefeed.tokens import mint
from tests.conftest import StartServer, redis_env
from tests.support.browser import TIMEOUT_MS, pause_clock, publish_now
from tests.support.clients import story, unique_tool
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess
from tests.support.site import StaticSite
from tests.support.timing import TIMEOUT, wait_until

pytestmark = pytest.mark.browser

SECRET = "a-test-secret-of-at-least-32-bytes!!"

START = """([url, tools, transport, token]) => {
  window.log = { events: [], errors: [], subscribed: [], expired: [], states: [] };
  window.feed = new LiveFeed({ url, tools, history: 0, transport, token })
    .on("event", (e) => log.events.push(e.id))
    .on("error", (e) => log.errors.push(e))
    .on("subscribed", (f) => log.subscribed.push(f.tool))
    .on("tokenexpired", (d) => log.expired.push(d.code))
    .on("state", (s) => log.states.push([s.state, s.code, s.delay]))
    .connect();
}"""


def wait_for(page: Page, expression: str, arg: Any = None) -> None:
    page.wait_for_function(expression, arg=arg, timeout=TIMEOUT_MS)


def start_feed(
    page: Page,
    server: ServerProcess,
    site: StaticSite,
    tools: list[str],
    transport: str = "auto",
    token: str | None = None,
) -> None:
    html = f'<!doctype html><script src="{server.url}/static/livefeed.js"></script>'
    page.goto(site.add("/feed.html", html))
    page.evaluate(START, [f"{server.url}/", tools, transport, token])


@pytest.fixture
def private_server(
    start_server: StartServer, redis_server: RedisServer, prefix: str
) -> tuple[ServerProcess, str]:
    """A server with one private tool; returns it and the tool."""
    tool = unique_tool("private")
    env = {**redis_env(redis_server, prefix), "LIVEFEED_SECRET": SECRET}
    return start_server({**env, "LIVEFEED_PRIVATE_TOOLS": tool}), tool


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_a_forbidden_tool_is_asked_for_again_under_a_new_token(
    transport: str, page: Page, private_server: tuple[ServerProcess, str], site: StaticSite
):
    """A refused tool was forgotten: a token that allows it, given later, did not bring
    it back (the widget waits for that `subscribed`)."""
    server, private = private_server
    public = unique_tool("public")
    start_feed(page, server, site, [private, public], transport)
    wait_for(page, "(tool) => log.subscribed.includes(tool)", public)
    wait_for(page, "() => log.errors.length > 0")
    assert page.evaluate("() => feed.tools") == [public]
    page.evaluate("(token) => feed.setToken(token)", mint(SECRET, "laura_garcia", [private], 600))
    wait_for(page, "(tool) => log.subscribed.includes(tool)", private)
    [published] = publish_now(server.url, story([private], "allowed now"))
    wait_for(page, "(id) => log.events.includes(id)", published["id"])
    assert sorted(page.evaluate("() => feed.tools")) == sorted([private, public])


def test_a_forbidden_tool_is_asked_for_again_with_a_new_token_functions_first_token(
    page: Page, private_server: tuple[ServerProcess, str], site: StaticSite
):
    """A function is asked at the next connection: the refused tool was asked for at
    once instead, under the old token, refused again, and left out of that connection."""
    server, private = private_server
    public = unique_tool("public")
    start_feed(page, server, site, [private, public], "websocket")
    wait_for(page, "(tool) => log.subscribed.includes(tool)", public)
    wait_for(page, "() => log.errors.length > 0")
    allowed = mint(SECRET, "laura_garcia", [private], 600)
    page.evaluate("(token) => feed.setToken(() => token)", allowed)
    page.evaluate("() => { feed.close(); feed.connect(); }")  # the next connection
    wait_for(page, "(tool) => log.subscribed.includes(tool)", private)
    assert page.evaluate("() => log.errors.length") == 1  # not refused a second time


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_a_forbidden_tool_is_an_error_and_the_feeds_other_tools_go_on(
    transport: str, page: Page, private_server: tuple[ServerProcess, str], site: StaticSite
):
    server, private = private_server
    public = unique_tool("public")
    start_feed(page, server, site, [private, public], transport)
    wait_for(page, "(tool) => log.subscribed.includes(tool)", public)
    wait_for(page, "() => log.errors.length > 0")
    [error] = page.evaluate("() => log.errors")
    assert (error["code"], error["tool"]) == ("forbidden", private)
    [published] = publish_now(server.url, story([public], "still delivered"))
    wait_for(page, "(id) => log.events.includes(id)", published["id"])
    assert page.evaluate("() => feed.state") == "open"


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_an_expired_token_is_reported_as_tokenexpired(
    transport: str, page: Page, private_server: tuple[ServerProcess, str], site: StaticSite
):
    server, private = private_server
    expired = mint(SECRET, "bob", [private], -5)
    start_feed(page, server, site, [private], transport, expired)
    wait_for(page, "() => log.expired.length > 0")
    assert page.evaluate("() => log.expired") == [4001]
    # A string token cannot be renewed by the feed: it waits for setToken().
    assert page.evaluate("() => log.states.at(-1)")[0] == "reconnecting"
    assert page.evaluate("() => log.subscribed") == []


def test_an_online_event_does_not_cut_short_the_wait_after_4029(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    pause_clock(page)  # no timer fires unless the test runs the clock
    start_feed(page, feed_server, site, [unique_tool("busy")], "websocket")
    wait_for(page, "() => feed.state === 'open'")
    # 120 frames at once: the burst of 40 passes, then a streak of refusals closes 4029.
    page.evaluate("() => { for (let i = 0; i < 120; i++) feed.ping(60000).catch(() => {}); }")
    wait_for(page, "() => log.states.some(([, code]) => code === 4029)")
    [[state, _, delay]] = [s for s in page.evaluate("() => log.states") if s[1] == 4029]
    assert state == "reconnecting" and delay >= 10_000  # slowFloor
    # The browser says the network is back (Wi-Fi roamed): the server's wait still holds.
    after = page.evaluate("() => { dispatchEvent(new Event('online')); return feed.state; }")
    assert after == "reconnecting"


def test_a_frame_too_large_for_the_server_stops_the_feed(
    page: Page, start_server: StartServer, site: StaticSite
):
    server = start_server({"LIVEFEED_MAX_FRAME_BYTES": "300"})
    tools = [unique_tool(f"long-tool-name-{i}") for i in range(12)]  # one subscribe > 300 B
    start_feed(page, server, site, tools, "websocket")
    wait_for(page, "() => feed.state === 'closed'")
    [error] = page.evaluate("() => log.errors")
    assert (error["code"], error["close"]) == ("frame_too_large", 1009)
    # Stopped, not "reconnecting": the same subscribe would only be refused again.
    assert page.evaluate("() => log.states.map(([s]) => s)") == ["connecting", "open", "closed"]


def test_a_token_too_long_for_a_frame_reconnects_with_it_instead(
    page: Page, private_server: tuple[ServerProcess, str], site: StaticSite
):
    server, private = private_server
    start_feed(page, server, site, [unique_tool("public")], "websocket")
    wait_for(page, "() => feed.state === 'open'")
    # A JWT listing many tools is over the 4 KiB frame limit: as an `auth` frame it
    # would be closed with 1009. It goes in the URL of a new connection instead.
    tools = [private, *(f"a-team-tool-with-a-long-name-{i:03d}" for i in range(140))]
    token = mint(SECRET, "alice", tools, 600)
    assert len(token) > 4096
    page.evaluate("(token) => feed.setToken(token)", token)
    wait_for(page, "() => log.states.filter(([s]) => s === 'open').length === 2")
    page.evaluate("(tool) => feed.subscribe([tool])", private)
    wait_for(page, "(tool) => log.subscribed.includes(tool)", private)  # the token is in use
    assert page.evaluate("() => log.errors") == []


def test_an_event_in_flight_across_a_resubscribe_does_not_cut_the_new_replay(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    tool = unique_tool("again")
    sockets: list[WebSocketRoute] = []
    held: list[str | bytes] = []  # server -> page frames, while the gate is shut
    gate = {"shut": False}

    def relay(ws: WebSocketRoute) -> None:  # the page's WebSocket, through the test
        sockets.append(ws)
        server = ws.connect_to_server()
        ws.on_message(server.send)
        server.on_message(lambda m: held.append(m) if gate["shut"] else ws.send(m))

    page.route_web_socket(re.compile(r"/ws(\?|$)"), relay)
    ids = [publish_now(feed_server.url, story([tool]))[0]["id"] for _ in range(3)]
    start_feed(page, feed_server, site, [], "websocket")
    page.evaluate("(tool) => feed.subscribe([tool], { history: 5 })", tool)
    wait_for(page, "(n) => log.events.length === n", 3)
    # An event is on its way to the page when the page unsubscribes and subscribes again.
    gate["shut"] = True
    ids += [publish_now(feed_server.url, story([tool]))[0]["id"]]
    page.evaluate(
        "(t) => { log.events = []; feed.unsubscribe([t]).subscribe([t], { history: 5 }); }", tool
    )
    deadline = time.monotonic() + TIMEOUT
    while sum(isinstance(m, str) and f'"{ids[-1]}"' in m for m in held) < 2:  # live, replay
        assert time.monotonic() < deadline, "the event and the new replay never came"
        page.wait_for_timeout(20)  # Playwright runs the relay's handlers while it waits
    [ws] = sockets
    gate["shut"] = False
    for message in held:  # in order: the old subscription's event, then the new replay
        ws.send(message)
    # The new subscription asked for 5 of history: all 4 events, none cut by the stray.
    wait_for(page, "(n) => log.events.length >= n", 4)
    assert page.evaluate("() => log.events") == ids


def test_many_subscribe_calls_in_one_task_go_out_together_within_the_frame_rate(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    first = unique_tool("first")
    tools = [unique_tool(f"t{i}") for i in range(50)]
    start_feed(page, feed_server, site, [first], "websocket")
    wait_for(page, "(tool) => log.subscribed.includes(tool)", first)
    # One call per tool, as a page adding widgets or rows might: 50 frames at once
    # would be over the server's rate (20/s, bursts of 40) and the rest dropped.
    page.evaluate("(tools) => { for (const tool of tools) feed.subscribe(tool); }", tools)
    wait_for(page, "(n) => log.subscribed.length === n", 1 + len(tools))
    [published] = publish_now(feed_server.url, story([tools[-1]], "to the last one"))
    wait_for(page, "(id) => log.events.includes(id)", published["id"])
    assert page.evaluate("() => log.errors") == []


def test_changes_made_before_a_token_goes_out_before_it(
    page: Page, private_server: tuple[ServerProcess, str], site: StaticSite
):
    server, private = private_server
    public = unique_tool("public")
    start_feed(page, server, site, [private, public], "websocket", mint(SECRET, "a", ["*"]))
    wait_for(page, "(n) => log.subscribed.length === n", 2)
    # A logout: give up the private tool, then narrow the token, in one task. Sent the
    # other way round, the server refuses the private tool first ("forbidden").
    narrower = mint(SECRET, "a", [public])
    logout = "async ([tool, token]) => { feed.unsubscribe(tool); feed.setToken(token); }"
    page.evaluate(logout, [private, narrower])
    page.evaluate("() => feed.ping()")  # answered after the server has taken both
    assert page.evaluate("() => [log.errors, feed.tools]") == [[], [public]]


def test_a_tool_asked_for_with_a_new_token_is_subscribed_under_it(
    page: Page, private_server: tuple[ServerProcess, str], site: StaticSite
):
    server, private = private_server
    public = unique_tool("public")
    start_feed(page, server, site, [public], "websocket", mint(SECRET, "a", [public]))
    wait_for(page, "(tool) => log.subscribed.includes(tool)", public)
    # A login: ask for the private tool, then give the token that allows it, in one task.
    login = "([tool, token]) => { feed.subscribe(tool); feed.setToken(token); }"
    page.evaluate(login, [private, mint(SECRET, "a", ["*"])])
    wait_for(page, "(tool) => log.subscribed.includes(tool)", private)
    assert page.evaluate("() => log.errors") == []


def test_a_subscribe_from_a_connecting_listener_opens_one_sse_stream(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    base, extra = unique_tool("base"), unique_tool("extra")
    # Count the streams opened, even one closed before its request left.
    page.add_init_script(
        """window.streams = []; const Native = window.EventSource;
        window.EventSource = class extends Native {
          constructor(url, init) { super(url, init); window.streams.push(String(url)); }
        };"""
    )
    html = f'<!doctype html><script src="{feed_server.url}/static/livefeed.js"></script>'
    page.goto(site.add("/connecting.html", html))
    page.evaluate(
        """([url, base, extra]) => {
        window.log = { subscribed: [] };
        window.feed = new LiveFeed({ url, tools: [base], transport: "sse" });
        feed.on("subscribed", (f) => log.subscribed.push(f.tool));
        feed.on("state", (s) => s.state === "connecting" && feed.subscribe(extra));
        feed.connect();
    }""",
        [f"{feed_server.url}/", base, extra],
    )
    wait_for(page, "() => log.subscribed.length === 2")
    streams = page.evaluate("() => window.streams")
    assert len(streams) == 1 and extra in streams[0]


def viewers(server: ServerProcess, tool: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/tools/{tool}/presence", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return {"count": response.json()["count"], "users": response.json()["users"]}


@pytest.mark.parametrize(
    ("transport", "logout"), [("websocket", None), ("websocket", ""), ("sse", None)]
)
def test_a_token_taken_away_ends_the_identity_at_once_and_misses_nothing(
    transport: str,
    logout: str | None,
    page: Page,
    private_server: tuple[ServerProcess, str],
    site: StaticSite,
):
    server, _ = private_server
    tool = unique_tool("public")
    start_feed(page, server, site, [tool], transport, mint(SECRET, "alice", [tool]))
    wait_until(lambda: viewers(server, tool) == {"count": 1, "users": ["alice"]})
    [before] = publish_now(server.url, story([tool], "before the logout"))
    wait_for(page, "(id) => log.events.includes(id)", before["id"])
    page.evaluate("(token) => feed.setToken(token)", logout)
    # The server forgets the handle (no frame drops a token, so the feed reconnects);
    # the viewer stays, and what is published meanwhile still arrives.
    [during] = publish_now(server.url, story([tool], "during the logout"))
    wait_until(lambda: viewers(server, tool) == {"count": 1, "users": []})
    wait_for(page, "(id) => log.events.includes(id)", during["id"])
    assert page.evaluate("() => [log.events, log.errors]") == [[before["id"], during["id"]], []]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_no_token_given_again_in_another_form_does_not_reconnect(
    transport: str, page: Page, feed_server: ServerProcess, site: StaticSite
):
    """null, undefined and "" all mean no token: a page that passes its logged-out user's
    token (`setToken(user.token)`, undefined) to a feed made without one must not make
    it reconnect (its viewers would leave and come back, its state flicker)."""
    tool = unique_tool("public")
    start_feed(page, feed_server, site, [tool], transport)
    wait_for(page, "(tool) => log.subscribed.includes(tool)", tool)
    states = page.evaluate(
        """() => {
          const before = log.states.length;
          feed.setToken(undefined).setToken("").setToken(null);
          return log.states.slice(before);
        }"""
    )
    assert states == []
    assert page.evaluate("() => feed.state") == "open"


def test_a_new_token_over_sse_is_used_at_once(
    page: Page, private_server: tuple[ServerProcess, str], site: StaticSite
):
    server, private = private_server
    public = unique_tool("public")
    start_feed(page, server, site, [public], "sse", mint(SECRET, "alice", [public]))
    wait_until(lambda: viewers(server, public)["users"] == ["alice"])
    # The stream's token is in its URL: a new one reopens it (the old one would have
    # run on to its expiry, and a 4001 then waited for a setToken() already made).
    page.evaluate("(token) => feed.setToken(token)", mint(SECRET, "bob", ["*"]))
    wait_until(lambda: viewers(server, public) == {"count": 1, "users": ["bob"]})
    page.evaluate("(tool) => feed.subscribe(tool)", private)
    wait_for(page, "(tool) => log.subscribed.includes(tool)", private)
    assert page.evaluate("() => log.errors") == []


def test_a_token_given_as_the_old_one_expires_is_used_without_waiting(
    page: Page, private_server: tuple[ServerProcess, str], site: StaticSite
):
    server, private = private_server

    def relay(ws: WebSocketRoute) -> None:  # loses the page's auth frames, as a close would
        server_side = ws.connect_to_server()
        ws.on_message(lambda m: None if '"auth"' in str(m) else server_side.send(m))
        server_side.on_message(ws.send)

    page.route_web_socket(re.compile(r"/ws(\?|$)"), relay)
    # Long enough to connect and subscribe on a busy machine (1 s was not, once).
    expiring = mint(SECRET, "a", [private], 4)
    start_feed(page, server, site, [private], "websocket", expiring)
    wait_for(page, "(tool) => log.subscribed.includes(tool)", private)
    page.evaluate("(token) => feed.setToken(token)", mint(SECRET, "a", [private]))
    # The old token expires before the server took the new one: 4001. The feed has a
    # token the closed connection never presented, so it reconnects with it at once.
    wait_for(page, "() => log.expired.length === 1 && feed.state === 'open'")
    wait_for(page, "(tool) => log.subscribed.filter((t) => t === tool).length === 2", private)
    [published] = publish_now(server.url, story([private], "after the renewal"))
    wait_for(page, "(id) => log.events.includes(id)", published["id"])


def test_a_token_renewed_over_the_connection_waits_for_the_next_when_it_expires(
    page: Page, private_server: tuple[ServerProcess, str], site: StaticSite
):
    """A token sent in an `auth` frame that the server took, then expired: the 4001 is
    about that token, so the feed waits for setToken() and says so once, as it did
    before a token the closed connection had not presented was retried at once (that
    made one connection with the expired token and a second `tokenexpired`)."""
    server, private = private_server
    public = unique_tool("public")
    start_feed(page, server, site, [public], "websocket", mint(SECRET, "alice", [private]))
    wait_for(page, "(tool) => log.subscribed.includes(tool)", public)
    page.evaluate(
        """() => feed.on("state", (s) => {
          if (s.waitingForToken) log.waiting = log.states.length;
        })"""
    )
    renewed = mint(SECRET, "bob", [private], 4)  # long enough to be taken first
    page.evaluate("(token) => feed.setToken(token)", renewed)
    wait_until(lambda: viewers(server, public)["users"] == ["bob"])
    wait_for(page, "() => log.waiting !== undefined")
    assert page.evaluate("() => log.expired") == [4001]
    assert [s[0] for s in page.evaluate("() => log.states")].count("connecting") == 1
