"""Event data is text: markup in a story never becomes elements, in the widget or the
dashboard (they share one renderer, so both are checked end to end)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import PageLog
from tests.browser.test_widget import embed_page
from tests.support.browser import expect_ids, publish_now
from tests.support.clients import story, unique_tool
from tests.support.server import ServerProcess
from tests.support.site import StaticSite

pytestmark = pytest.mark.browser

TITLE = '<img src=x onerror="window.__xss=1">'
BODY = "<script>window.__xss=2</script><img src=x onerror=alert(1)> & done"
TAGS = ["<script>alert(2)</script>", "<b>bold</b>"]
NAME = "<svg onload=alert(3)>"
JOB = "<iframe src=javascript:alert(4)>"


def open_items(
    page: Page, where: str, server: ServerProcess, site: StaticSite, tool: str
) -> Locator:
    """Open the dashboard or a widget page for ``tool``; its items, once it is live."""
    if where == "dashboard":
        page.goto(f"{server.url}/?tools={tool}")
        expect(page.get_by_test_id(f"presence-{tool}")).to_have_attribute("data-count", "1")
        return page.get_by_test_id(f"items-{tool}").locator("> li")
    page.goto(site.add("/xss.html", embed_page(server, f'data-tool="{tool}"')))
    host = page.locator("livefeed-widget")
    expect(host.get_by_test_id("presence")).to_have_text("1 viewing now")
    return host.locator("li.item")


@pytest.mark.parametrize("where", ["dashboard", "widget"])
def test_markup_in_a_story_is_shown_as_text(
    where: str, page: Page, page_log: PageLog, feed_server: ServerProcess, site: StaticSite
):
    tool = unique_tool("xss")
    items = open_items(page, where, feed_server, site, tool)
    author = {"handle": "mallory", "name": NAME, "title": JOB}
    document = story([tool], TITLE, body=BODY, tags=TAGS, author=author)
    [published] = publish_now(feed_server.url, document)

    expect_ids(items, [published["id"]])
    item = items.first
    expect(item.locator(".title")).to_have_text(TITLE)
    expect(item.locator(".body")).to_have_text(BODY)
    expect(item.locator(".tag")).to_have_text(TAGS)
    expect(item.locator(".job")).to_have_text(f"{NAME} · {JOB}")
    # Nothing of the markup became an element (the avatar, having no URL, is a letter).
    expect(item.locator("img, script, svg, iframe, b")).to_have_count(0)
    expect(item.locator(".avatar")).to_have_text("M")
    assert page.evaluate("() => window.__xss") is None
    assert page_log.dialogs == []
