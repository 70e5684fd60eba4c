"""Make docs/screenshots/*.png: the dashboard and the widget, light and dark.

Run it as ``scripts/screenshots`` (which uses ./.venv). It starts ``livefeed serve``
(embedded broker, a free port), publishes a fixed demo stream into it
(``livefeed demo --seed 1``), photographs the pages in Debian's Chromium
(/usr/bin/chromium, driven by Playwright), and stops everything it started. The
same seed gives the same stories; only ids and times differ between runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
PYTHON = sys.executable
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
KEY = "screenshots"  # the publish key of the server this script starts
SEED, COUNT = 1, 200  # the demo stream: 200 events fill every column shown
DASHBOARD_TOOLS = "*,kubernetes,go,kafka"  # busy tools of seed 1
WIDGET_TOOLS = "go"
TIMEOUT_MS = 15_000
# A page of another site (another local port) with the widget in it. A loopback server
# rather than a Playwright route: Chromium lets only local pages load from 127.0.0.1.
HOST_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tool page</title>
<style>
  body {{ margin: 0; padding: 24px; background: {bg}; font-family: system-ui, sans-serif; }}
  #box {{ width: 420px; padding: 16px; }}
</style></head>
<body><div id="box">
<script src="{server}/static/widget.js" data-tools="{tools}" data-items="5"
        data-theme="{theme}" async></script>
</div></body></html>"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def livefeed_server() -> Iterator[str]:
    """``livefeed serve`` on a free port with the embedded broker; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEFEED_")}
    env.pop("REDIS_URL", None)  # the embedded broker: nothing outside this script
    env["LIVEFEED_PUBLISH_KEYS"] = KEY
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [PYTHON, "-m", "livefeed", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            while not answers(f"{url}/healthz"):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"livefeed serve did not start:\n{log.read().decode()}")
                time.sleep(0.05)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextmanager
def host_site(pages: dict[str, str]) -> Iterator[str]:
    """Serve ``pages`` (path -> HTML) from 127.0.0.1 on a port of its own; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "not found").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def publish_demo(url: str) -> None:
    command = [PYTHON, "-m", "livefeed", "demo", "--seed", str(SEED), "--count", str(COUNT)]
    command += ["--rate", "500", "--url", url, "--key", KEY]
    done = subprocess.run(command, timeout=120, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"livefeed demo failed:\n{done.stderr}")


def dashboard(browser: Browser, url: str, scheme: str, width: int, height: int) -> Page:
    context = browser.new_context(
        viewport={"width": width, "height": height},
        color_scheme=scheme,  # type: ignore[arg-type]
        reduced_motion="reduce",
    )
    page = context.new_page()
    page.goto(f"{url}/?tools={DASHBOARD_TOOLS}")
    expect(page.get_by_test_id("state")).to_have_attribute("data-state", "open")
    for tool in DASHBOARD_TOOLS.split(","):
        expect(page.get_by_test_id(f"items-{tool}").locator("> li").first).to_be_visible()
        expect(page.get_by_test_id(f"presence-{tool}")).to_have_attribute("data-count", "1")
    expect(page.get_by_test_id("epm-*")).not_to_have_text("0")  # the sparkline is drawn
    return page


def widget(browser: Browser, site: str, theme: str) -> Page:
    context = browser.new_context(
        viewport={"width": 480, "height": 900},
        color_scheme=theme,  # type: ignore[arg-type]
        reduced_motion="reduce",
    )
    page = context.new_page()
    page.goto(f"{site}/{theme}.html")
    host = page.locator("livefeed-widget")
    expect(host.locator("li.item")).to_have_count(5)
    expect(host.get_by_test_id("presence")).to_have_text("1 viewing now")
    expect(host.get_by_test_id("state")).to_have_attribute("data-state", "open")
    return page


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with livefeed_server() as url:
        publish_demo(url)
        pages = {
            f"/{theme}.html": HOST_HTML.format(bg=bg, server=url, tools=WIDGET_TOOLS, theme=theme)
            for theme, bg in (("light", "#ffffff"), ("dark", "#010409"))
        }
        with host_site(pages) as site, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            expect.set_options(timeout=TIMEOUT_MS)
            try:
                for scheme in ("light", "dark"):
                    page = dashboard(browser, url, scheme, 1440, 900)
                    page.screenshot(path=OUT / f"dashboard-{scheme}.png")
                    page.context.close()
                    page = widget(browser, site, scheme)
                    page.locator("#box").screenshot(path=OUT / f"widget-{scheme}.png")
                    page.context.close()
                page = dashboard(browser, url, "light", 390, 844)
                page.screenshot(path=OUT / "dashboard-phone.png")
                page.context.close()
            finally:
                browser.close()
    for path in sorted(OUT.glob("*.png")):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
