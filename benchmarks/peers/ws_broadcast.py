"""Baseline: raw ``websockets`` with ``broadcast()``, fed by Redis pub/sub.

The plain-Python ceiling: one encoded frame written to every connection without awaiting
(and so without backpressure; a connection whose buffer is full is skipped).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from http import HTTPStatus

from redis import asyncio as redis
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

from benchmarks import loop
from benchmarks.peers.asgi import parse_args, subscribed_frame, tools_of


async def main(port: int, redis_url: str) -> None:
    subscribers: dict[str, set[ServerConnection]] = defaultdict(set)
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    listening = asyncio.Event()
    # One subscribe at a time: redis-py's PubSub opens its connection lazily, and two
    # first subscribes racing each open one, leaving a subscription on an orphan.
    subscribing = asyncio.Lock()

    async def pump() -> None:
        await listening.wait()
        async for message in pubsub.listen():
            if message["type"] == "message":
                broadcast(subscribers[message["channel"].decode()], message["data"].decode())

    async def handler(connection: ServerConnection) -> None:
        tools = tools_of(connection.request.path.partition("?")[2] if connection.request else "")
        for tool in tools:
            async with subscribing:
                if tool not in subscribers:
                    await pubsub.subscribe(tool)
                    listening.set()
            subscribers[tool].add(connection)
            await connection.send(subscribed_frame(tool))
        try:
            await connection.wait_closed()
        finally:
            for tool in tools:
                subscribers[tool].discard(connection)

    def health(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/readyz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    pump_task = asyncio.create_task(pump())
    async with serve(
        handler, "127.0.0.1", port, process_request=health, compression=None, backlog=4096
    ) as server:
        await server.serve_forever()
    pump_task.cancel()


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    loop.run(main(args.port, args.redis_url))
