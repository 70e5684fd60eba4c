"""Test clients: a WebSocket client that reads frames as dicts, and HTTP publishing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.raw_ws import RawWebSocket
from tests.support.server import PUBLISH_KEY, ServerProcess
from tests.support.timing import TIMEOUT, async_wait_until

_counter = itertools.count()


def unique_tool(stem: str = "tool") -> str:
    """A tool slug no other test uses, so tests sharing a server never see each other."""
    return f"{stem}-{next(_counter)}-{id(_counter) % 9973}"


class WsClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    @classmethod
    async def open(
        cls, ws_url: str, additional_headers: dict[str, str] | None = None, **query: str
    ) -> WsClient:
        url = f"{ws_url}?{urlencode(query)}" if query else ws_url
        return cls(
            await connect(
                url, max_size=None, open_timeout=TIMEOUT, additional_headers=additional_headers
            )
        )

    @classmethod
    async def subscribed(cls, ws_url: str, tools: str) -> WsClient:
        """Open with ``tools`` in the URL and read the welcome and each tool's
        ``subscribed``."""
        client = await cls.open(ws_url, tools=tools)
        await client.welcome()
        for _ in tools.split(","):
            await client.expect("subscribed")
        return client

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = orjson.dumps(frame).decode()
        await self.connection.send(frame)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        message = await asyncio.wait_for(self.connection.recv(), timeout)
        frame: dict[str, Any] = orjson.loads(message)
        return frame

    async def expect(self, frame_type: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["type"] == frame_type, f"expected {frame_type}, got {frame}"
        return frame

    async def welcome(self) -> dict[str, Any]:
        return await self.expect("welcome")

    async def subscribe(self, tools: list[str], **options: Any) -> list[dict[str, Any]]:
        """Send a subscribe and return the ``subscribed`` replies, one per tool."""
        await self.send({"type": "subscribe", "tools": tools, **options})
        return [await self.expect("subscribed") for _ in tools]

    async def events(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """The next ``count`` event frames (other frame types are not expected here)."""
        return [await self.expect("event", timeout) for _ in range(count)]

    async def closed_with(self, timeout: float = TIMEOUT) -> int | None:
        """Read until the server closes; return its close code."""
        try:
            while True:
                await asyncio.wait_for(self.connection.recv(), timeout)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def nothing_more(self, within: float = 0.3) -> None:
        """Assert no frame arrives for a short while (used only after a reply that
        would have been sent first, so the wait is not what makes the test pass)."""
        try:
            frame = await asyncio.wait_for(self.connection.recv(), within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame!r}")

    async def close(self) -> None:
        await self.connection.close()


def story(tools: list[str], title: str = "A story", **data: Any) -> dict[str, Any]:
    return {
        "kind": "story",
        "tools": tools,
        "data": {"author": {"handle": "laura_garcia"}, "title": title, **data},
    }


def activity(tool: str, handle: str = "klodnitsky", verb: str = "started_using") -> dict[str, Any]:
    return {"kind": "activity", "data": {"actor": {"handle": handle}, "verb": verb, "tool": tool}}


async def publish(
    base_url: str,
    document: Any,
    key: str | None = PUBLISH_KEY,
    http: httpx.AsyncClient | None = None,
) -> httpx.Response:
    """POST /api/events; ``key=None`` sends no Authorization header at all. Pass an open
    ``http`` client to reuse its connection across many publishes."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    if http is not None:
        return await http.post(f"{base_url}/api/events", content=body, headers=headers)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        return await client.post(f"{base_url}/api/events", content=body, headers=headers)


def stored(base_url: str, tool: str) -> list[dict[str, Any]]:
    """The tool's kept history (up to 100 events), through the HTTP API."""
    response = httpx.get(f"{base_url}/api/tools/{tool}/events?limit=100", timeout=TIMEOUT)
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def publish_ok(
    base_url: str, document: Any, http: httpx.AsyncClient | None = None
) -> list[dict[str, str]]:
    response = await publish(base_url, document, http=http)
    assert response.status_code == 202, response.text
    events: list[dict[str, str]] = response.json()["events"]
    return events


# Outbox limits high enough that a backlog (below) never closes a connection with 4008.
ROOMY_OUTBOX = {"LIVEFEED_OUTBOX_FRAMES": "100000", "LIVEFEED_OUTBOX_BYTES": str(64 * 2**20)}
_SEND_BUFFER_MAX = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


async def publish_backlog(
    base_url: str, tool: str, between: Callable[[], object] = lambda: None
) -> None:
    """Publish ~10 MB to ``tool``: more than twice what the kernel's socket buffers can
    hold, so a subscriber that stopped reading has most of it waiting in the server.
    ``between`` runs before each of the 25 publishes."""
    body, batches = "x" * 4000, 25
    assert batches * 100 * len(body) > 2 * _SEND_BUFFER_MAX
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for batch in range(batches):
            between()
            await publish_ok(
                base_url, {"events": [story([tool], f"b{batch}", body=body)] * 100}, http
            )


async def presence_count(base_url: str, tool: str) -> int:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.get(f"{base_url}/api/tools/{tool}/presence")
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


async def wait_session_ended(base_url: str, tool: str, timeout: float = TIMEOUT) -> None:
    """Wait until no session is counted present on ``tool``."""

    async def session_ended() -> bool:
        return await presence_count(base_url, tool) == 0

    await async_wait_until(session_ended, timeout, "the session to end")


@contextlib.asynccontextmanager
async def stalled_subscriber(server: ServerProcess, tool: str) -> AsyncIterator[RawWebSocket]:
    """A raw WebSocket subscribed to ``tool`` that reads nothing (a small receive
    window), with :func:`publish_backlog` waiting for it in the server; aborted on exit."""
    stalled = await RawWebSocket.open(server.port, f"/ws?tools={tool}", receive_buffer=4096)
    try:
        await asyncio.wait_for(stalled.reader.readuntil(b'"subscribed"'), TIMEOUT)
        await publish_backlog(server.url, tool)
        yield stalled
    finally:
        stalled.abort()
