"""The embeddable widget on a page of another origin, in Chromium."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import Locator, Page, Route, WebSocketRoute, expect
from websockets.sync.client import connect

from livefeed.tokens import mint
from tests.browser.conftest import PageLog
from tests.conftest import StartServer
from tests.support.browser import TIMEOUT_MS, expect_ids, pause_clock, publish_now
from tests.support.clients import activity, story, unique_tool
from tests.support.server import ServerProcess
from tests.support.site import StaticSite
from tests.support.timing import TIMEOUT, wait_until

pytestmark = pytest.mark.browser


def embed_page(server: ServerProcess, *tags: str) -> str:
    """A customer's page with one widget script tag per entry of ``tags`` (attributes)."""
    scripts = "\n".join(
        f'<script src="{server.url}/static/widget.js" {attrs} async></script>' for attrs in tags
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A customer's site</title></head>
<body><h1>Our tools</h1>
{scripts}
</body></html>"""


def tool_name(slug: str) -> str:
    """How the widget names a tool: its slug's words, capitalised."""
    return " ".join(word.capitalize() for word in re.split(r"[-_]", slug) if word)


def widget(page: Page, tools: str) -> Locator:
    """The widget showing ``tools``, once live (Playwright locators pierce shadow roots)."""
    host = page.locator(f'livefeed-widget[data-tools="{tools}"]')
    expect(host.get_by_test_id("state")).to_have_attribute("data-state", "open")
    return host


def test_widgets_on_another_origin_show_events_and_presence_over_one_websocket(
    page: Page, page_log: PageLog, feed_server: ServerProcess, site: StaticSite
):
    a, b = unique_tool("wa"), unique_tool("wb")
    url = site.add("/tools.html", embed_page(feed_server, f'data-tool="{a}"', f'data-tool="{b}"'))
    assert not url.startswith(feed_server.url)  # same host, another port: another origin
    page.goto(url)
    first, second = widget(page, a), widget(page, b)
    presence = first.get_by_test_id("presence")
    expect(presence).to_have_text("1 viewing now")  # this page; subscribed to a, so live
    expect(second.get_by_test_id("presence")).to_have_text("1 viewing now")

    [s] = publish_now(feed_server.url, story([a], "Deploying on a Friday"))
    [act] = publish_now(feed_server.url, activity(b, handle="klodnitsky"))
    expect_ids(first.locator("li.item"), [s["id"]])
    expect(first.locator("li.item .title")).to_have_text("Deploying on a Friday")
    expect_ids(second.locator("li.item"), [act["id"]])
    expect(second.locator("li.item .line")).to_contain_text(
        f"@klodnitsky started using {tool_name(b)}"
    )
    expect(first.locator("li.item")).to_have_count(1)  # each widget shows its own tool only

    # Another viewer of `a` (a plain WebSocket client) shows up, and goes again.
    with connect(f"{feed_server.ws_url}?tools={a}", open_timeout=TIMEOUT) as viewer:
        viewer.recv(TIMEOUT)  # welcome: the subscription is being made
        expect(presence).to_have_text("2 viewing now")
        expect(second.get_by_test_id("presence")).to_have_text("1 viewing now")
    expect(presence).to_have_text("1 viewing now")

    # Both widgets came from one server, so they share one connection.
    assert page_log.websockets == [feed_server.ws_url]


def test_a_widget_on_another_origin_falls_back_to_sse(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    def refuse(ws: WebSocketRoute) -> None:
        ws.close(code=1006, reason="blocked by a proxy")

    page.route_web_socket(re.compile(r"/ws(\?|$)"), refuse)
    tool = unique_tool("wsse")
    page.goto(site.add("/sse.html", embed_page(feed_server, f'data-tool="{tool}"')))
    host = page.locator("livefeed-widget")
    # Three refused WebSocket attempts with their backoffs (below 1, 2 and 4 s), then SSE.
    expect(host.get_by_test_id("state")).to_have_attribute(
        "data-state", "open", timeout=3 * TIMEOUT_MS
    )
    # Live: the count came with the SSE stream's `subscribed` (cross-origin, so CORS).
    expect(host.get_by_test_id("presence")).to_have_text("1 viewing now")
    assert page.evaluate(f"() => LiveFeed.shared({{url: '{feed_server.url}/'}}).transport") == "sse"

    [published] = publish_now(feed_server.url, story([tool], "Through a strict proxy"))
    expect_ids(host.locator("li.item"), [published["id"]])


def presence_count(server: ServerProcess, tool: str) -> int:
    response = httpx.get(f"{server.url}/api/tools/{tool}/presence", timeout=TIMEOUT)
    count: int = response.json()["count"]
    return count


def test_a_widget_removed_from_the_page_stops_counting_as_a_viewer(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    pause_clock(page)  # so the widget's removal check can be run at once
    a, b = unique_tool("kept"), unique_tool("gone")
    url = site.add("/spa.html", embed_page(feed_server, f'data-tool="{a}"', f'data-tool="{b}"'))
    page.goto(url)
    kept = page.locator(f'livefeed-widget[data-tools="{a}"]')
    expect(kept.get_by_test_id("presence")).to_have_text("1 viewing now")
    wait_until(lambda: presence_count(feed_server, b) == 1, what="the second widget counted")

    # A single-page app moves on: one widget's element goes.
    page.evaluate(f"() => document.querySelector('livefeed-widget[data-tools=\"{b}\"]').remove()")
    page.clock.run_for(2_500)  # past the widget's removal check
    wait_until(lambda: presence_count(feed_server, b) == 0, what="the removed widget uncounted")
    assert presence_count(feed_server, a) == 1  # the other widget still watches its tool
    [s] = publish_now(feed_server.url, story([a], "still live"))
    expect_ids(kept.locator("li.item"), [s["id"]])

    # The last widget goes: the connection the widgets opened closes.
    page.evaluate("() => document.querySelector('livefeed-widget').remove()")
    page.clock.run_for(2_500)
    wait_until(lambda: presence_count(feed_server, a) == 0, what="the last widget uncounted")
    state = page.evaluate(f"() => LiveFeed.shared({{ url: '{feed_server.url}/' }}).state")
    assert state == "closed"


def test_the_page_and_its_widgets_hold_their_own_subscriptions_on_the_shared_feed(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    pause_clock(page)  # so the widget's removal check can be run at once
    tool = unique_tool("owned")
    page.goto(site.add("/owned.html", embed_page(feed_server, f'data-tool="{tool}"')))
    shown = widget(page, tool)
    feed = f"LiveFeed.shared({{ url: '{feed_server.url}/' }})"

    # The page's own code subscribes the widget's tool, then gives it up: the widget,
    # which holds it too, stays subscribed.
    page.evaluate(
        f"""(tool) => {{
        window.got = [];
        {feed}.on("event", (e) => e.tool === tool && got.push(e.id));
        {feed}.subscribe(tool).unsubscribe(tool);
    }}""",
        tool,
    )
    [first] = publish_now(feed_server.url, story([tool], "still the widget's"))
    expect_ids(shown.locator("li.item"), [first["id"]])

    # The page subscribes it again, after the widget did; the widget goes: the page's
    # subscription stays, and so does the connection it needs.
    page.evaluate(f"(tool) => {feed}.subscribe(tool)", tool)
    page.evaluate("() => document.querySelector('livefeed-widget').remove()")
    page.clock.run_for(2_500)  # past the widget's removal check
    assert page.evaluate(f"() => [{feed}.tools, {feed}.state]") == [[tool], "open"]
    [second] = publish_now(feed_server.url, story([tool], "still the page's"))
    page.wait_for_function("(id) => got.includes(id)", arg=second["id"], timeout=TIMEOUT_MS)
    assert presence_count(feed_server, tool) == 1


def test_a_widget_of_the_firehose_and_a_tool_shows_each_event_once(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    tool = unique_tool("both")
    page.goto(site.add("/both.html", embed_page(feed_server, f'data-tools="*,{tool}"')))
    host = widget(page, f"*,{tool}")
    publish_now(feed_server.url, activity(tool, handle="klodnitsky"))
    publish_now(feed_server.url, story([tool], "marker"))
    # Each channel is in order: once both streams have the marker, both copies of the
    # activity have arrived too.
    page.wait_for_function(
        """([url, tool]) => [tool, "*"].every((key) => LiveFeed.shared({ url }).recent(key)
             .some((e) => e.data.title === "marker"))""",
        arg=[f"{feed_server.url}/", tool],
        timeout=TIMEOUT_MS,
    )
    expect(host.locator("li.item").filter(has_text="@klodnitsky")).to_have_count(1)
    expect(host.locator("li.item").filter(has_text="marker")).to_have_count(1)


def test_a_widget_of_the_firehose_and_a_tool_shows_the_tool_when_the_firehose_is_refused(
    page: Page, start_server: StartServer, site: StaticSite
):
    # With any tool private, the firehose needs a token that allows it: refused here.
    server = start_server({"LIVEFEED_SECRET": "s" * 32, "LIVEFEED_PRIVATE_TOOLS": "payroll"})
    tool = unique_tool("public")
    page.goto(site.add("/refused.html", embed_page(server, f'data-tools="*,{tool}"')))
    host = widget(page, f"*,{tool}")
    page.wait_for_function(
        "(url) => !LiveFeed.shared({ url }).tools.includes('*')",
        arg=f"{server.url}/",
        timeout=TIMEOUT_MS,
    )
    [s] = publish_now(server.url, story([tool], "the tool's own copy"))
    expect_ids(host.locator("li.item"), [s["id"]])


def test_a_widget_in_the_head_is_not_taken_for_removed_while_the_body_loads(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    pause_clock(page)  # the removal check runs only when the test runs the clock
    tool = unique_tool("head")
    released = []

    def slow_script(route: Route) -> None:  # a third-party script that holds the parser
        released.append(route)

    page.route("**/slow.js", slow_script)
    html = f"""<!doctype html><html><head>
<script src="{feed_server.url}/static/widget.js" data-tool="{tool}"></script>
</head><body><h1>Page</h1><script src="{site.origin}/slow.js"></script></body></html>"""
    with page.expect_request("**/slow.js"):
        page.goto(site.add("/head.html", html), wait_until="commit")
    url = f"{feed_server.url}/"
    live = "(url) => globalThis.LiveFeed && LiveFeed.shared({ url }).state === 'open'"
    deadline = time.monotonic() + TIMEOUT
    # Wait in Playwright (route handlers run only then; the page's timers are paused)
    # until the slow script is held and the widget is live, not yet on the page.
    while not (released and page.evaluate(live, url)):
        assert time.monotonic() < deadline, "the widget never went live"
        page.wait_for_timeout(20)
    assert not page.evaluate("() => document.querySelector('livefeed-widget')?.isConnected")
    page.clock.run_for(5_000)  # removal checks run while the widget is not placed yet
    released[0].fulfill(status=200, content_type="text/javascript", body="window.done = 1;")
    host = widget(page, tool)
    [s] = publish_now(feed_server.url, story([tool], "after the body"))
    expect_ids(host.locator("li.item"), [s["id"]])
    assert presence_count(feed_server, tool) == 1


def test_a_data_target_that_is_not_a_css_selector_is_ignored_not_thrown_into_the_page(
    page: Page, page_log: PageLog, feed_server: ServerProcess, site: StaticSite
):
    # `#1col` is how an id that starts with a digit is (wrongly) written as a selector:
    # document.querySelector throws a SyntaxError on it.
    tool = unique_tool("badtarget")
    warnings: list[str] = []
    page.on("console", lambda m: m.type == "warning" and warnings.append(m.text))
    html = embed_page(feed_server, f'data-tool="{tool}" data-target="#1col"')
    page.goto(site.add("/badtarget.html", html.replace("<h1>", '<div id="1col"></div><h1>')))
    host = widget(page, tool)
    # Placed as without data-target: right after its script tag.
    assert page.evaluate(
        "() => document.querySelector('livefeed-widget').previousElementSibling.src"
    ).endswith("/static/widget.js")
    [s] = publish_now(feed_server.url, story([tool], "shown anyway"))
    expect_ids(host.locator("li.item"), [s["id"]])
    assert page_log.errors == []
    assert any("#1col" in text for text in warnings)


def test_a_widget_renders_into_a_data_target_that_comes_later_in_the_document(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    # The script runs while the parser is still in <head>: its target is not there yet
    # (the same happens to an async script that runs before the body is parsed).
    tool = unique_tool("target")
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>Target</title>
<script src="{feed_server.url}/static/widget.js" data-tool="{tool}" data-target="#feed"></script>
</head><body><h1>Page</h1><aside id="feed"></aside><p>the end</p></body></html>"""
    page.goto(site.add("/target.html", html))
    host = widget(page, tool)
    assert page.evaluate("() => document.querySelector('livefeed-widget').parentElement.id") == (
        "feed"
    )
    [s] = publish_now(feed_server.url, story([tool], "in its place"))
    expect_ids(host.locator("li.item"), [s["id"]])


def test_a_widget_of_a_private_tool_without_a_token_says_it_is_not_available(
    page: Page, start_server: StartServer, site: StaticSite
):
    server = start_server({"LIVEFEED_SECRET": "s" * 32, "LIVEFEED_PRIVATE_TOOLS": "payroll"})
    public = unique_tool("open")
    page.goto(
        site.add(
            "/private.html",
            embed_page(server, 'data-tool="payroll"', f'data-tool="{public}"'),
        )
    )
    refused = page.locator('livefeed-widget[data-tools="payroll"]')
    # Not "Nothing yet: new posts ... appear here" forever: the server refused it.
    expect(refused.locator(".empty")).to_have_text("Not available (forbidden).")
    expect(refused.locator(".empty")).to_be_visible()
    # The other widget on the same connection is unaffected.
    shown = widget(page, public)
    expect(shown.locator(".empty")).to_have_text(re.compile("^Nothing yet"))
    [s] = publish_now(server.url, story([public], "still public"))
    expect_ids(shown.locator("li.item"), [s["id"]])


def test_tool_slugs_in_capitals_are_read_in_lower_case_and_no_valid_tool_mounts_nothing(
    page: Page, page_log: PageLog, feed_server: ServerProcess, site: StaticSite
):
    tool = unique_tool("caps")
    html = embed_page(feed_server, 'data-tool="Not a tool!"', f'data-tool="{tool.upper()}"')
    page.goto(site.add("/caps.html", html))
    host = widget(page, tool)  # "Flask" is flask
    [s] = publish_now(feed_server.url, story([tool], "in lower case"))
    expect_ids(host.locator("li.item"), [s["id"]])
    # The widget with no valid tool left no empty box on the page...
    expect(page.locator("livefeed-widget")).to_have_count(1)
    # ...and no subscription-less connection: the one WebSocket has the valid tool.
    assert page_log.websockets == [feed_server.ws_url]
    assert page.evaluate(f"() => LiveFeed.shared({{ url: '{feed_server.url}/' }}).tools") == [tool]


def test_a_widget_of_two_tools_counts_its_viewer_once_and_data_items_0_shows_one(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    a, b = unique_tool("pa"), unique_tool("pb")
    tag = f'data-tools="{a},{b}" data-items="0"'
    page.goto(site.add("/two.html", embed_page(feed_server, tag)))
    host = widget(page, f"{a},{b}")
    # This page is one viewer, in both tools' counts: it was shown as 2 (their sum).
    expect(host.get_by_test_id("presence")).to_have_text("1 viewing now")
    ids = [publish_now(feed_server.url, story([a], f"story {i}"))[0]["id"] for i in range(2)]
    # "0" was read as missing (10 items); it is clamped to 1 like any number below it.
    expect_ids(host.locator("li.item"), ids[1:])


def test_a_busy_widget_announces_at_most_once_every_10_seconds(
    page: Page, feed_server: ServerProcess, site: StaticSite
):
    pause_clock(page)  # the widget's timers run only as the test moves the clock
    tool = unique_tool("busy")
    page.goto(site.add("/busy.html", embed_page(feed_server, f'data-tool="{tool}"')))
    host = widget(page, tool)
    announcer = host.get_by_test_id("announcer")
    # The quiet time of the history replay starts again at `subscribed`, which carries
    # the count: run the clock past it only once it has come (or "first" is history).
    expect(host.get_by_test_id("presence")).to_have_text("1 viewing now")
    page.clock.run_for(3_500)

    def arrive(title: str) -> None:
        [published] = publish_now(feed_server.url, story([tool], title))
        expect(host.locator(f'li.item[data-id="{published["id"]}"]')).to_have_count(1)

    arrive("first")
    page.clock.run_for(1_000)
    expect(announcer).to_have_text("New story by @laura_garcia: first")
    arrive("second")
    arrive("third")
    page.clock.run_for(5_000)  # a message a second on a busy feed would have come by now
    expect(announcer).to_have_text("New story by @laura_garcia: first")
    page.clock.run_for(5_000)
    expect(announcer).to_have_text("2 new items")


def test_a_widget_whose_token_expired_says_so_rather_than_reconnecting(
    page: Page, start_server: StartServer, site: StaticSite
):
    """A static `data-token` cannot be renewed by the widget: after 4001 the feed waits
    for setToken(), and the widget said "Reconnecting…" for good."""
    secret = "s" * 32
    server = start_server({"LIVEFEED_SECRET": secret, "LIVEFEED_PRIVATE_TOOLS": "payroll"})
    token = mint(secret, "laura_garcia", ["payroll"], 2)
    page.goto(
        site.add("/expiring.html", embed_page(server, f'data-tool="payroll" data-token="{token}"'))
    )
    status = widget(page, "payroll").get_by_test_id("state")
    expect(status).to_have_text("Token expired")
    expect(status).to_have_attribute("data-state", "reconnecting")
