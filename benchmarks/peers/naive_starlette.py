"""Baseline: a naive Starlette loop, ``await send_text`` per subscriber, fed by Redis pub/sub.

No outbox, no backpressure: one slow subscriber delays every later one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

from redis import asyncio as redis
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from benchmarks.peers.asgi import parse_args, serve, subscribed_frame, tools_of


def build(redis_url: str) -> Starlette:
    subscribers: dict[str, set[WebSocket]] = defaultdict(set)
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    listening = asyncio.Event()  # redis-py's listen() ends at once with no subscription
    # One subscribe at a time: redis-py's PubSub opens its connection lazily, and two
    # first subscribes racing each open one, leaving a subscription on an orphan.
    subscribing = asyncio.Lock()

    async def pump() -> None:
        await listening.wait()
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            text = message["data"].decode()
            for websocket in list(subscribers.get(message["channel"].decode(), ())):
                with contextlib.suppress(Exception):
                    await websocket.send_text(text)

    async def feed(websocket: WebSocket) -> None:
        await websocket.accept()
        tools = tools_of(websocket.url.query)
        for tool in tools:
            async with subscribing:
                if tool not in subscribers:
                    await pubsub.subscribe(tool)
                    listening.set()
            subscribers[tool].add(websocket)
            await websocket.send_text(subscribed_frame(tool))
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            for tool in tools:
                subscribers[tool].discard(websocket)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(pump())
        yield
        task.cancel()

    async def ready(_request: object) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[Route("/readyz", ready), WebSocketRoute("/ws", feed)], lifespan=lifespan
    )


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    serve(build(args.redis_url), args.port)
