"""Shared plumbing for the Python peers: command line, /readyz, uvicorn, one process."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    return parser.parse_args()


def subscribed_frame(tool: str) -> str:
    """What every plain-WebSocket peer sends once a subscription is live (as livefeed does)."""
    return json.dumps({"type": "subscribed", "tool": tool})


def tools_of(query: str) -> list[str]:
    """``tools=a,b`` from a query string (``bench`` when absent)."""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "tools" and value:
            return value.split(",")
    return ["bench"]


async def readyz(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI HTTP app: 200 on any path (the runner polls /readyz)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok\n"})


def serve(app: Any, port: int) -> None:
    """uvicorn the same way for every Python peer: one process, uvloop, httptools, logs off.

    The WebSocket protocol is ``websockets-sansio``, as livefeed's own server uses (and
    uvicorn's next default); ``BENCH_UVICORN_WS=websockets`` selects the legacy one.
    """
    import os

    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws=os.environ.get("BENCH_UVICORN_WS", "websockets-sansio"),
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
