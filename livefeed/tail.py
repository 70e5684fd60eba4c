"""``livefeed tail``: subscribe over WebSocket and print events as JSON lines."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
import websockets


def ws_url(base: str, params: dict[str, str]) -> str:
    """``http://host:port`` (or ``ws://``) -> ``ws://host:port/ws?...``."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "/ws", urlencode(params), ""))


async def tail(
    url: str, tools: list[str], history: int, count: int | None, token: str | None
) -> int:
    params = {"token": token} if token else {}
    async with websockets.connect(ws_url(url, params), max_size=None) as ws:
        frame: dict[str, Any] = {"type": "subscribe", "tools": tools, "history": history}
        await ws.send(orjson.dumps(frame).decode())
        seen = 0
        async for message in ws:
            text = message if isinstance(message, str) else message.decode()
            data = orjson.loads(text)
            if data.get("type") == "event":
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
                seen += 1
                if count is not None and seen >= count:
                    return 0
            elif data.get("type") == "error":
                print(f"livefeed: {data.get('code')}: {data.get('message')}", file=sys.stderr)
            else:
                print(f"livefeed: {text}", file=sys.stderr)
    return 0
