"""``livefeed tail``: subscribe over WebSocket and print events as JSON lines.

Events go to stdout, one JSON line each; everything else the server says (the
``subscribed`` replies, errors) goes to stderr. The command ends with 0 once
``--count`` events are printed, and with 1, saying why on one line, when nothing
could be subscribed or the server closed the connection first.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
import websockets
from websockets.frames import Close

_SUBSCRIBE_REF = "tail"  # marks the replies to our one subscribe frame


def ws_url(base: str, params: dict[str, str]) -> str:
    """``http://host:port`` (or ``ws://``) -> ``ws://host:port/ws?...``."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "/ws", urlencode(params), ""))


def _say(text: str) -> None:
    print(f"livefeed: {text}", file=sys.stderr)


def _closed(close: Close | None) -> str:
    if close is None:
        return "the connection to the server was lost"
    reason = f" ({close.reason})" if close.reason else ""
    return f"the server closed the connection: {close.code}{reason}"


async def tail(
    url: str, tools: list[str], history: int, count: int | None, token: str | None
) -> int:
    params = {"token": token} if token else {}
    async with websockets.connect(ws_url(url, params), max_size=None) as ws:
        frame: dict[str, Any] = {
            "type": "subscribe",
            "tools": tools,
            "history": history,
            "ref": _SUBSCRIBE_REF,
        }
        # Each tool (repeats count once) gets a `subscribed` or an error naming it.
        unanswered = len(set(tools))
        subscribed = 0
        seen = 0
        try:
            # Inside: a server may close at once (an expired --token: 4001; draining:
            # 1001), before this send.
            await ws.send(orjson.dumps(frame).decode())
            async for message in ws:
                text = message if isinstance(message, str) else message.decode()
                data = orjson.loads(text)
                kind = data.get("type")
                if kind == "event":
                    sys.stdout.write(text + "\n")
                    sys.stdout.flush()
                    seen += 1
                    if count is not None and seen >= count:
                        return 0
                    continue
                if kind == "error":
                    _say(f"{data.get('code')}: {data.get('message')}")
                else:
                    _say(text)
                if data.get("ref") != _SUBSCRIBE_REF:
                    continue
                if kind == "subscribed":
                    subscribed += 1
                elif "tool" not in data:  # the whole frame was refused
                    return 1
                unanswered -= 1
                if not unanswered and not subscribed:
                    _say("none of the tools could be subscribed")
                    return 1
        except websockets.ConnectionClosed as exc:
            _say(_closed(exc.rcvd))
            return 1
        _say(_closed(ws.protocol.close_rcvd))  # a 1000 or 1001 ends the loop quietly
        return 1
