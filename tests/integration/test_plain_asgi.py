"""The app under plain uvicorn (``uvicorn --factory livefeed.app:create_app``): no direct
write path, the ASGI fallback (``transports/ws._serve_asgi`` and its QueueOutbox)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import StartServer
from tests.support.clients import WsClient, publish_ok, story, unique_tool
from tests.support.server import PLAIN_UVICORN, ServerProcess
from tests.support.sse import open_sse
from tests.support.timing import TIMEOUT


@pytest.fixture
def plain(start_server: StartServer) -> ServerProcess:
    return start_server(command=PLAIN_UVICORN)


async def test_a_subscriber_gets_its_replay_then_live_events_and_its_pongs_in_order(
    plain: ServerProcess,
):
    tool = unique_tool()
    stored = [(await publish_ok(plain.url, story([tool], f"old {i}")))[0]["id"] for i in range(3)]
    client = await WsClient.open(plain.ws_url)
    await client.welcome()
    await client.send({"type": "subscribe", "tools": [tool], "history": 2, "ref": "s"})
    await client.send({"type": "ping", "ref": "p"})
    assert (await client.expect("subscribed"))["ref"] == "s"
    assert [e["id"] for e in await client.events(2)] == stored[1:]
    assert await client.recv() == {"type": "pong", "ref": "p"}
    [live] = await publish_ok(plain.url, story([tool], "new"))
    [event] = await client.events(1)
    assert event["id"] == live["id"] and event["data"]["title"] == "new"
    await client.close()


async def test_a_binary_frame_is_an_error_and_an_oversized_one_closes_1009(plain: ServerProcess):
    client = await WsClient.open(plain.ws_url)
    await client.welcome()
    await client.send(b"\x00binary")
    error = await client.expect("error")
    assert error["code"] == "bad_frame"
    await client.send("x" * 5000)  # over the 4 KiB client frame limit
    assert await client.closed_with() == 1009


async def test_an_sse_stream_gets_live_events(plain: ServerProcess):
    tool = unique_tool()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await open_sse(http, f"{plain.url}/sse?tools={tool}")
        assert sse.response.status_code == 200
        await sse.wait_for("subscribed")
        [live] = await publish_ok(plain.url, story([tool], "over sse"))
        [event] = await sse.events(1)
        assert event["id"] == live["id"]
        await sse.response.aclose()
