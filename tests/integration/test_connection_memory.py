"""A closed connection is freed by reference counting: it leaves nothing that only the
garbage collector could free. The server raises the collector's thresholds (young
collections cost CPU per delivery), so full collections are rare, and one reference
cycle per closed connection grew memory without bound under churn. The server runs in
this process, with the collector off, so its objects can be counted."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator

import httpx
import orjson
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.server import ServerProtocol

from livefeed.config import Settings
from livefeed.session import Session
from livefeed.transports.direct import DirectOutbox, DirectWebSocketProtocol
from livefeed.transports.ws import Connection
from tests.support.clients import WsClient, publish_ok, story
from tests.support.ports import free_port
from tests.support.server import PUBLISH_KEY, serve_in_process
from tests.support.sse import open_sse
from tests.support.timing import TIMEOUT, async_wait_until

CONNECTION_TYPES = (
    HttpToolsProtocol,
    DirectWebSocketProtocol,
    ServerProtocol,
    DirectOutbox,
    Connection,
    Session,
)


def connection_objects() -> Counter[str]:
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, CONNECTION_TYPES))


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_closed_connections_are_freed_without_the_garbage_collector(collector_off: None):
    settings = Settings(port=free_port(), publish_keys=(PUBLISH_KEY,), log_level="warning")
    async with serve_in_process(settings) as address:
        ws_url = f"ws://{address}/ws"
        clients = [await WsClient.open(ws_url, tools="flask") for _ in range(4)]
        for client in clients:
            await client.welcome()
            await client.expect("subscribed")
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            sse = await open_sse(http, f"http://{address}/sse?tools=flask")
            await sse.wait_for("subscribed")
            await publish_ok(f"http://{address}", story(["flask"]))
            for client in clients:
                await client.events(1)
            await sse.events(1)
            assert connection_objects()["DirectWebSocketProtocol"] == 4
            assert connection_objects()["Session"] == 5

        clean, aborted, too_large, bad_frames = clients
        await clean.close()
        aborted.connection.transport.abort()
        await too_large.send(orjson.dumps({"type": "ping", "ref": "x" * 5000}).decode())
        assert await too_large.closed_with() == 1009  # a protocol error, kept with its traceback
        await bad_frames.send("not json")
        await bad_frames.send(b"\x00")
        await bad_frames.expect("error")
        await bad_frames.expect("error")
        await bad_frames.close()

        def all_freed() -> bool:
            return not connection_objects()

        try:
            await async_wait_until(all_freed, what="the closed connections to be freed")
        except AssertionError:
            left = dict(connection_objects())
            raise AssertionError(f"alive until a garbage collection: {left}") from None
