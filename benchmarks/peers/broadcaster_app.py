"""encode/broadcaster on Starlette with its Redis backend, as its README's chat example does.

Two workarounds for races in broadcaster 0.3.1, without which it delivers nothing here:

- ``Broadcast.subscribe()`` awaits the backend's SUBSCRIBE before recording a channel's
  first queue and then *assigns* the set, so of many connections subscribing to a new
  channel at once only the last is kept (the others get nothing and raise KeyError on
  leaving): 999 of 1,000 subscribers lost everything at 1,000 connections/s. Subscribing
  is serialised here.
- The Redis backend wakes its listener before SUBSCRIBE completes; a listener that looks
  first sees no subscription, stops, and sleeps until the next *new* channel. Two warm-up
  channels are subscribed at startup: the second wakes the listener with the first in
  place, so it keeps listening.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from benchmarks.peers.asgi import parse_args, serve, subscribed_frame, tools_of


def build(redis_url: str) -> Starlette:
    broadcast = Broadcast(redis_url)
    subscribing = asyncio.Lock()  # see the module docstring

    async def feed(websocket: WebSocket) -> None:
        await websocket.accept()
        tool = tools_of(websocket.url.query)[0]
        async with anyio.create_task_group() as group:

            async def receiver() -> None:
                with contextlib.suppress(WebSocketDisconnect):
                    while True:
                        await websocket.receive_text()
                group.cancel_scope.cancel()

            async def sender() -> None:
                async with contextlib.AsyncExitStack() as stack:
                    async with subscribing:
                        subscriber = await stack.enter_async_context(
                            broadcast.subscribe(channel=tool)
                        )
                    await websocket.send_text(subscribed_frame(tool))
                    async for event in subscriber:  # type: ignore[union-attr]
                        await websocket.send_text(event.message)

            group.start_soon(receiver)
            group.start_soon(sender)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await broadcast.connect()
        async with contextlib.AsyncExitStack() as stack:
            for channel in ("bench-warmup-1", "bench-warmup-2"):  # see the module docstring
                await stack.enter_async_context(broadcast.subscribe(channel=channel))
            yield
        await broadcast.disconnect()

    async def ready(_request: object) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[Route("/readyz", ready), WebSocketRoute("/ws", feed)], lifespan=lifespan
    )


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    serve(build(args.redis_url), args.port)
