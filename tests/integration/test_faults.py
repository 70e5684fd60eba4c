"""Redis going away mid-stream, and shutting down with SIGTERM."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import time

import httpx
import pytest

from livefeed.history import parse_id
from livefeed.transports.ws import MAX_WAITING_FRAMES
from tests.conftest import StartServer, redis_env
from tests.support.clients import (
    ROOMY_OUTBOX,
    WsClient,
    publish,
    publish_backlog,
    publish_ok,
    story,
    unique_tool,
)
from tests.support.raw_ws import RawWebSocket
from tests.support.redis_server import RedisServer
from tests.support.server import PLAIN_UVICORN
from tests.support.sse import StalledReader
from tests.support.timing import TIMEOUT, async_wait_until


async def test_redis_restarts_mid_stream_deliver_every_acknowledged_event_and_no_refused_one(
    start_server: StartServer, own_redis: RedisServer, prefix: str
):
    server = start_server(redis_env(own_redis, prefix))
    tool = unique_tool()
    client = await WsClient.subscribed(server.ws_url, tool)
    acked: list[str] = []
    codes: list[str] = []  # the error code of every publish not answered 202
    stop = asyncio.Event()

    async def publish_steadily() -> None:
        async with httpx.AsyncClient(timeout=3 * TIMEOUT) as http:
            for i in itertools.count():
                if stop.is_set():
                    return
                response = await publish(server.url, story([tool], f"n{i}"), http=http)
                if response.status_code == 202:
                    acked.append(response.json()["events"][0]["id"])
                else:
                    assert response.status_code == 503, response.text
                    codes.append(response.json()["error"]["code"])
                await asyncio.sleep(0.005)

    publishing = asyncio.create_task(publish_steadily())
    for _ in range(3):  # a publish in flight as Redis goes down has its reply lost
        count = len(acked)
        await async_wait_until(
            lambda count=count: len(acked) >= count + 30 or publishing.done(),
            what="30 more publishes before the restart",
        )
        await asyncio.to_thread(own_redis.restart)
    count = len(acked)
    await async_wait_until(
        lambda: len(acked) >= count + 30 or publishing.done(), what="publishing to resume"
    )
    stop.set()
    await publishing
    received: list[str] = []
    while not received or received[-1] != acked[-1]:
        received.append((await client.events(1, timeout=2 * TIMEOUT))[0]["id"])
    # Every acknowledged event arrives, in order, once; one answered 503 `unavailable`
    # never does: it was not stored. Only `outcome_unknown` (Redis could not be asked
    # about a lost reply in time) would leave a publish in doubt.
    assert received == sorted(set(received), key=parse_id)
    assert set(codes) <= {"unavailable", "outcome_unknown"}
    unacked = [i for i in received if i not in set(acked)]
    assert len(unacked) <= codes.count("outcome_unknown"), f"503 yet delivered: {unacked}"
    assert [i for i in received if i in set(acked)] == acked
    await client.close()


async def test_sigterm_closes_every_connection_with_1001_and_exits_in_time(
    start_server: StartServer,
):
    server = start_server()
    clients = [await WsClient.subscribed(server.ws_url, "flask") for _ in range(5)]
    started = time.monotonic()
    assert server.process is not None
    server.process.terminate()
    codes = await asyncio.gather(*(client.closed_with() for client in clients))
    assert codes == [1001] * 5
    exit_code = await asyncio.to_thread(server.process.wait, 10)
    assert time.monotonic() - started < 10
    # After a graceful shutdown uvicorn re-raises the signal, so the exit status says
    # "terminated by SIGTERM" as a supervisor expects.
    assert exit_code == -signal.SIGTERM
    assert "Application shutdown complete" in server.log()
    assert "closed 5 connections with 1001" in server.log()


async def test_sigterm_exits_in_time_with_a_stalled_stream_and_a_redis_that_stopped_answering(
    start_server: StartServer, own_redis: RedisServer, prefix: str
):
    """Redis frozen (it accepts connections but answers nothing, as when its host
    hangs) and an SSE client that reads nothing: the drain waits its 4 s for that
    stream, uvicorn until the stream is cut, and withdrawing the process's presence
    must not then wait out a Redis command timeout. Found by timing SIGTERM so: it
    exited after 10.07 s, 5 s of them the withdrawal's write to the frozen Redis."""
    server = start_server({**redis_env(own_redis, prefix), **ROOMY_OUTBOX})
    tool = unique_tool()
    stalled = await StalledReader.open(server.port, tool)
    await publish_backlog(server.url, tool)  # megabytes wait for it in the server
    assert own_redis.process is not None and server.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        server.process.terminate()
        await asyncio.to_thread(server.process.wait, 2 * TIMEOUT)
        assert time.monotonic() - started < 10
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
        stalled.abort()


async def test_after_sigkill_of_one_process_a_client_resumes_on_the_other_missing_nothing(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    doomed = start_server(redis_env(redis_server, prefix))
    survivor = start_server(redis_env(redis_server, prefix))
    tool = unique_tool()
    client = await WsClient.subscribed(doomed.ws_url, tool)
    seen = [(await publish_ok(survivor.url, story([tool], f"a{i}")))[0]["id"] for i in range(3)]
    assert [e["id"] for e in await client.events(3)] == seen
    doomed.kill()
    assert await client.closed_with() is None  # no close frame: the process just died
    missed = [(await publish_ok(survivor.url, story([tool], f"b{i}")))[0]["id"] for i in range(4)]
    again = await WsClient.open(survivor.ws_url)
    await again.welcome()
    [reply] = await again.subscribe([tool], since={tool: seen[-1]})
    assert reply["recovered"] is True
    assert [e["id"] for e in await again.events(4)] == missed
    await again.close()


async def test_a_client_resuming_after_a_redis_outage_gets_every_acknowledged_event(
    start_server: StartServer, own_redis: RedisServer, prefix: str
):
    server = start_server(redis_env(own_redis, prefix))
    tool = unique_tool()
    client = await WsClient.subscribed(server.ws_url, tool)
    [first] = await publish_ok(server.url, story([tool], "before"))
    assert (await client.events(1))[0]["id"] == first["id"]
    await client.close()
    own_redis.stop()
    refused = await publish(server.url, story([tool], "refused"))
    assert refused.status_code == 503
    own_redis.start()
    acked: list[str] = []

    async def accepted() -> bool:
        response = await publish(server.url, story([tool], "after"))
        if response.status_code == 202:
            acked.append(response.json()["events"][0]["id"])
        return len(acked) >= 3

    await async_wait_until(accepted, what="publishing to resume after Redis is back")
    again = await WsClient.open(server.ws_url)
    await again.welcome()
    [reply] = await again.subscribe([tool], since={tool: first["id"]})
    assert reply["recovered"] is True
    assert [e["id"] for e in await again.events(len(acked))] == acked
    await again.close()


SERVERS = pytest.mark.parametrize(
    "command", [(), PLAIN_UVICORN], ids=["livefeed serve", "plain uvicorn"]
)


@SERVERS
async def test_pings_behind_a_subscribe_waiting_for_redis_are_answered_before_it(
    start_server: StartServer, own_redis: RedisServer, prefix: str, command: tuple[str, ...]
):
    server = start_server(redis_env(own_redis, prefix), command=command)
    client = await WsClient.open(server.ws_url)
    await client.welcome()
    own_redis.stop()
    tool = unique_tool()
    await client.send({"type": "subscribe", "tools": [tool], "ref": "s"})
    await client.send({"type": "ping", "ref": "waiting"})
    await client.send(b"binary")
    # The subscribe waits for Redis (its reply promises live delivery). A client's
    # liveness check must not take that wait for a dead connection: once the subscribe
    # has taken SLOW_FRAME, the ping waiting behind it is answered, and a ping sent
    # then is answered at once. (The binary frame is refused as it arrives.)
    first = [await client.recv(), await client.recv()]
    assert sorted(first, key=lambda frame: frame["type"]) == [
        {"type": "error", "code": "bad_frame", "message": "frames are JSON text, not binary"},
        {"type": "pong", "ref": "waiting"},
    ]
    await client.send({"type": "ping", "ref": "later"})
    assert await client.recv() == {"type": "pong", "ref": "later"}
    own_redis.start()
    subscribed = await client.expect("subscribed")
    assert (subscribed["tool"], subscribed["ref"]) == (tool, "s")
    # With the broker answering, a ping waits its turn: frames keep their order.
    await client.send({"type": "subscribe", "tools": [unique_tool()], "ref": "s2"})
    await client.send({"type": "ping", "ref": "last"})
    assert (await client.recv())["ref"] == "s2"
    assert await client.recv() == {"type": "pong", "ref": "last"}
    await client.close()


@SERVERS
async def test_at_most_100_frames_wait_behind_a_subscribe_waiting_for_redis(
    start_server: StartServer, own_redis: RedisServer, prefix: str, command: tuple[str, ...]
):
    fast = {"LIVEFEED_FRAME_RATE": "1000", "LIVEFEED_FRAME_BURST": "1000"}
    server = start_server({**redis_env(own_redis, prefix), **fast}, command=command)
    client = await WsClient.open(server.ws_url)
    await client.welcome()
    own_redis.stop()
    await client.send({"type": "subscribe", "tools": [unique_tool()]})
    await client.send({"type": "ping", "ref": "slow"})
    for n in range(MAX_WAITING_FRAMES - 1):  # with the ping: 100 frames waiting
        await client.send({"type": "unsubscribe", "tools": [f"waiting-{n}"]})
    # Once the subscribe has been slow the ping is answered (and waits no more); a
    # ping then is answered at once, so it shows the connection open with 100 waiting.
    assert await client.recv() == {"type": "pong", "ref": "slow"}
    await client.send({"type": "unsubscribe", "tools": ["the 100th"]})
    await client.send({"type": "ping", "ref": "open"})
    assert await client.recv() == {"type": "pong", "ref": "open"}
    await client.send({"type": "unsubscribe", "tools": ["one more"]})
    assert await client.closed_with() == 4029


async def test_a_publish_refused_while_redis_is_away_costs_its_key_nothing(
    start_server: StartServer, own_redis: RedisServer, prefix: str
):
    limits = {"LIVEFEED_MAX_BATCH": "1", "LIVEFEED_PUBLISH_BURST": "1"}
    limits["LIVEFEED_PUBLISH_RATE"] = "0.001"  # one event, then a 1,000 s wait
    server = start_server({**redis_env(own_redis, prefix), **limits})
    own_redis.stop()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for _ in range(3):
            refused = await publish(server.url, story(["flask"], "nowhere to go"), http=http)
            assert refused.status_code == 503, refused.text
        own_redis.start()
        accepted = await publish(server.url, story(["flask"], "stored"), http=http)
        assert accepted.status_code == 202, accepted.text  # the refusals spent nothing
        over = await publish(server.url, story(["flask"], "over the rate"), http=http)
        assert over.status_code == 429


async def test_requests_during_the_drain_are_told_1001_over_websocket_and_sse(
    start_server: StartServer,
):
    """A request on a keep-alive connection (a proxy's, say) can reach a server that is
    shutting down. An SSE request was answered 503, which stops a browser's EventSource
    for good, and a WebSocket handshake was refused (403), which a browser sees as 1006:
    each must hear 1001 instead, and reconnect elsewhere."""
    server = start_server(ROOMY_OUTBOX)
    tool = unique_tool()
    # A client that reads nothing holds the drain open (up to 4 s) ...
    stalled = await StalledReader.open(server.port, tool)
    await publish_backlog(server.url, tool)
    # ... two kept-alive connections are open, and a WebSocket tells when the drain began.
    kept = [await kept_alive(server.port) for _ in range(2)]
    client = await WsClient.open(server.ws_url, tools=tool)
    await client.welcome()
    assert server.process is not None
    try:
        server.process.terminate()
        assert await client.closed_with() == 1001
        (sse_reader, sse_writer), (ws_reader, ws_writer) = kept
        sse_writer.write(f"GET /sse?tools={tool} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await asyncio.wait_for(sse_reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        body = await asyncio.wait_for(sse_reader.read(), TIMEOUT)
        late = await RawWebSocket.upgrade(ws_reader, ws_writer, server.port, f"/ws?tools={tool}")
        code = await asyncio.wait_for(late.close_code(), TIMEOUT)
    finally:
        stalled.abort()
        for _, writer in kept:
            writer.transport.abort()
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    assert body.startswith(b"retry: ")
    assert b'event: close\ndata: {"type":"close","code":1001' in body
    assert code == 1001


async def kept_alive(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has had one answered request and stays open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    healthz = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    [length] = re.findall(rb"content-length: (\d+)", healthz.lower())
    await reader.readexactly(int(length))
    return reader, writer
