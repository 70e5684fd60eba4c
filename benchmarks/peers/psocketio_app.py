"""python-socketio (ASGI, under uvicorn) with its ``AsyncRedisManager``.

A client joins a tool's room with ``42["subscribe", tool]`` and is told
``42["subscribed", tool]``; publishers emit ``story`` to the room via Redis.
"""

from __future__ import annotations

import socketio

from benchmarks.peers.asgi import parse_args, readyz, serve


def build(redis_url: str) -> socketio.ASGIApp:
    manager = socketio.AsyncRedisManager(redis_url)
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, transports=["websocket"])

    @sio.on("subscribe")  # type: ignore[misc]
    async def subscribe(sid: str, tool: str) -> None:
        await sio.enter_room(sid, tool)
        await sio.emit("subscribed", tool, to=sid)

    return socketio.ASGIApp(sio, other_asgi_app=readyz)


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    serve(build(args.redis_url), args.port)
