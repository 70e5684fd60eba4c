"""History and ``since`` resume: exact, gap-free, on both brokers."""

from __future__ import annotations

import asyncio
import random

import httpx

from livefeed.history import parse_id
from tests.conftest import StartServer, redis_env
from tests.support.clients import WsClient, publish_ok, story, unique_tool
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess
from tests.support.timing import TIMEOUT


async def ids_of(server: ServerProcess, tool: str, count: int) -> list[str]:
    return [(await publish_ok(server.url, story([tool], f"e{i}")))[0]["id"] for i in range(count)]


async def test_since_resumes_with_exactly_the_missed_events(server: ServerProcess):
    tool = unique_tool()
    ids = await ids_of(server, tool, 10)
    client = await WsClient.open(server.ws_url)
    await client.welcome()
    [reply] = await client.subscribe([tool], since={tool: ids[3]}, ref="r")
    assert reply == {
        "type": "subscribed",
        "tool": tool,
        "ref": "r",
        "presence": 1,
        "recovered": True,
    }
    assert [e["id"] for e in await client.events(6)] == ids[4:]
    [live] = await publish_ok(server.url, story([tool], "live"))
    assert (await client.events(1))[0]["id"] == live["id"]
    await client.close()


async def test_reconnecting_with_the_last_id_misses_and_repeats_nothing(server: ServerProcess):
    tool = unique_tool()
    client = await WsClient.subscribed(server.ws_url, tool)
    before = await ids_of(server, tool, 3)
    seen = [e["id"] for e in await client.events(3)]
    await client.close()
    missed = await ids_of(server, tool, 4)
    again = await WsClient.open(server.ws_url)
    await again.welcome()
    [reply] = await again.subscribe([tool], since={tool: seen[-1]}, history=2)
    assert reply["recovered"] is True
    assert [e["id"] for e in await again.events(4)] == missed
    assert seen == before
    await again.close()


async def test_a_firehose_cursor_resumes_the_firehose(server: ServerProcess):
    tool = unique_tool()
    client = await WsClient.open(server.ws_url)
    await client.welcome()
    await client.subscribe(["*"])
    await publish_ok(server.url, story([tool], "first"))
    while (event := (await client.events(1))[0])["tool"] != tool:
        pass
    await client.close()
    await publish_ok(server.url, story([tool], "second"))
    again = await WsClient.open(server.ws_url)
    await again.welcome()
    [reply] = await again.subscribe(["*"], since={"*": event["id"]})
    assert reply["recovered"] is True
    while (resumed := (await again.events(1))[0])["tool"] != tool:
        pass
    assert resumed["data"]["title"] == "second" and resumed["channel"] == "*"
    assert parse_id(resumed["id"]) > parse_id(event["id"])  # type: ignore[operator]
    await again.close()


async def test_a_cursor_older_than_kept_history_is_not_recovered(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    for env in ({}, redis_env(redis_server, prefix)):
        server = start_server({**env, "LIVEFEED_HISTORY_SIZE": "5"})
        tool = unique_tool()
        ids = await ids_of(server, tool, 12)
        client = await WsClient.open(server.ws_url)
        await client.welcome()
        [reply] = await client.subscribe([tool], since={tool: ids[2]})
        assert reply["recovered"] is False
        assert [e["id"] for e in await client.events(5)] == ids[-5:]  # from the oldest kept
        await client.close()


async def test_500_events_from_4_publishers_with_a_subscriber_joining_mid_stream(
    server: ServerProcess,
):
    tool = unique_tool()
    acked: list[str] = []
    under_way = asyncio.Event()

    async def publisher(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            for i in range(125):
                [ack] = await publish_ok(server.url, story([tool], f"p{seed}-{i}"), http)
                acked.append(ack["id"])
                if len(acked) >= 100:
                    under_way.set()
                await asyncio.sleep(rng.random() * 0.004)

    publishers = asyncio.gather(*(publisher(seed) for seed in range(4)))
    await asyncio.wait_for(under_way.wait(), TIMEOUT)
    client = await WsClient.open(server.ws_url)
    await client.welcome()
    acked_before = len(acked)
    await client.subscribe([tool], history=20)
    acked_after = len(acked)
    await publishers
    published = sorted(acked, key=parse_id)
    received: list[str] = []
    while not received or received[-1] != published[-1]:
        received.append((await client.events(1))[0]["id"])
    start = published.index(received[0])
    assert received == published[start:], "a gap or a repeat"
    # The replay is the 20 events before the history read, which came after
    # `acked_before` acks and before `acked_after` (plus at most 4 stored, not yet acked).
    assert acked_before - 20 <= start <= acked_after + 4 - 20
    assert acked_after < 480, "the subscriber joined while publishing went on"
    await client.close()
