"""Thousands of random and malformed frames and HTTP requests at a live server; then it
must be healthy, have logged no traceback, and serve a fresh subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import random
import string

import httpx
import orjson

from tests.conftest import StartServer, redis_env
from tests.support.clients import WsClient, publish_ok, story, unique_tool
from tests.support.raw_ws import RawWebSocket, client_frame
from tests.support.redis_server import RedisServer
from tests.support.server import PUBLISH_KEY, ServerProcess
from tests.support.timing import TIMEOUT

FRAMES_PER_CONNECTION = 800
HTTP_REQUESTS = 900


def random_json(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randrange(9 if depth < 3 else 5)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False, 0, -1, 2**63, 1e308, "", "*", "flask", "1-0"])
    if choice == 2:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(20)))
    if choice == 3:
        return rng.randrange(-(10**6), 10**6)
    if choice == 4:
        return rng.choice(["subscribe", "unsubscribe", "ping", "auth", "story", "activity"])
    if choice in (5, 6):
        keys = [
            "type",
            "tools",
            "history",
            "since",
            "presence",
            "ref",
            "token",
            "kind",
            "data",
            "events",
            "author",
            "title",
            "actor",
            "verb",
            "tool",
            "x",
        ]
        return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(6))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]


def random_frame(rng: random.Random) -> bytes:
    """One client frame on the wire: mostly texts, some binary, oversize, broken UTF-8,
    control frames, fragments."""
    kind = rng.randrange(10)
    if kind < 5:
        return client_frame(orjson.dumps(random_json(rng)))
    if kind == 5:
        return client_frame(rng.randbytes(rng.randrange(1, 200)))
    if kind == 6:
        return client_frame(rng.randbytes(rng.randrange(1, 64)), opcode=0x2)
    if kind == 7:
        return client_frame(rng.randbytes(8), opcode=0x9)  # ping
    if kind == 8:  # a fragmented text message
        return client_frame(b'{"type":', fin=False) + client_frame(b'"ping"}', opcode=0x0)
    return client_frame(b"\xff\xfe\xfd")  # text that is not UTF-8


async def _drain(raw: RawWebSocket) -> None:
    """Read whatever the server sends until it closes (no back-pressure on it)."""
    with contextlib.suppress(OSError):
        await raw.reader.read(-1)


async def hammer_websocket(server: ServerProcess, seed: int) -> None:
    rng = random.Random(seed)
    raw = await RawWebSocket.open(server.port)
    draining = asyncio.create_task(_drain(raw))
    for i in range(FRAMES_PER_CONNECTION):
        if raw.writer.is_closing() or draining.done():
            # The server closed us (policy, size, rate...): open another connection.
            raw.abort()
            raw = await RawWebSocket.open(server.port)
            draining = asyncio.create_task(_drain(raw))
        raw.writer.write(random_frame(rng))
        if i % 50 == 0:
            with contextlib.suppress(ConnectionError):  # closed under us: reopened above
                await raw.writer.drain()

    if rng.random() < 0.5:
        raw.writer.write(client_frame(b"x" * 70_000))  # over the frame limit
    await asyncio.sleep(0)
    raw.abort()
    draining.cancel()


async def hammer_http(server: ServerProcess, seed: int) -> None:
    rng = random.Random(seed)
    headers = [{}, {"Authorization": f"Bearer {PUBLISH_KEY}"}, {"Authorization": "Bearer x"}]
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        for _ in range(HTTP_REQUESTS):
            kind = rng.randrange(6)
            if kind < 3:
                body = (
                    orjson.dumps(random_json(rng))
                    if kind < 2
                    else rng.randbytes(rng.randrange(300))
                )
                await http.post("/api/events", content=body, headers=rng.choice(headers))
            elif kind == 3:
                tool = rng.choice(["flask", "*", "Bad Tool", "%00", "a" * 80, ""])
                query = {rng.choice(["limit", "since", "x"]): str(random_json(rng))}
                await http.get(f"/api/tools/{tool}/events", params=query)
            elif kind == 4:
                await http.get("/api/presence", params={"tools": str(random_json(rng))})
            else:
                params = {
                    "tools": rng.choice(["flask", "a,Bad", "", "*"]),
                    "history": str(rng.randrange(-5, 200)),
                }
                cursor = "".join(c for c in str(random_json(rng)) if c.isprintable())
                headers_sse = {"Last-Event-ID": cursor[:200].strip()}

                async with http.stream(
                    "GET", "/sse", params=params, headers=headers_sse
                ) as response:
                    if response.status_code == 200:
                        await anext(response.aiter_lines())  # the stream opened; leave


async def test_a_barrage_of_garbage_leaves_the_server_healthy(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    server = start_server(
        {
            **redis_env(redis_server, prefix),
            "LIVEFEED_FRAME_RATE": "100000",
            "LIVEFEED_FRAME_BURST": "100000",
        }
    )
    await asyncio.gather(
        *(hammer_websocket(server, seed) for seed in range(4)),
        *(hammer_http(server, seed) for seed in range(2)),
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
    tool = unique_tool()
    fresh = await WsClient.subscribed(server.ws_url, tool)
    [event] = await publish_ok(server.url, story([tool], "after the storm"))
    assert (await fresh.events(1))[0]["id"] == event["id"]
    await fresh.close()
    # start_server's teardown fails the test if the server logged any traceback.
