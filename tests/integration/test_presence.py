"""Presence across processes: counts, frames, expiry of a dead process, HTTP reads."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.conftest import StartServer, redis_env
from tests.support.clients import WsClient, publish_ok, story, unique_tool
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess
from tests.support.timing import TIMEOUT, async_wait_until


async def viewer(server: ServerProcess, tool: str, presence: bool = False) -> WsClient:
    client = await WsClient.open(server.ws_url)
    await client.welcome()
    await client.subscribe([tool], presence=presence)
    return client


async def count_on(server: ServerProcess, tool: str) -> int:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        body = (await http.get(f"{server.url}/api/tools/{tool}/presence")).json()
    assert body["tool"] == tool and body["users"] == []
    return int(body["count"])


async def test_counts_are_merged_across_processes(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    one = start_server(redis_env(redis_server, prefix))
    two = start_server(redis_env(redis_server, prefix))
    tool = unique_tool()
    clients = [await viewer(one, tool), await viewer(one, tool), await viewer(two, tool)]

    async def everywhere(expected: int) -> bool:
        return await count_on(one, tool) == expected and await count_on(two, tool) == expected

    started = time.monotonic()
    await async_wait_until(lambda: everywhere(3), what="3 viewers seen on both processes")
    # The contract's bound (a change is visible everywhere within 2 s), with margin for
    # a loaded CI machine; the design gives about 1 s (a flush, then a read).
    assert time.monotonic() - started < 2.0 * 2
    await clients[2].close()
    await async_wait_until(lambda: everywhere(2), what="the viewer who left to be gone")
    late = await WsClient.open(two.ws_url)
    await late.welcome()
    [reply] = await late.subscribe([tool])
    assert reply["presence"] == 3  # the two on the other process, and itself
    for client in (*clients[:2], late):
        await client.close()


async def test_presence_frames_go_only_to_subscriptions_that_asked(server: ServerProcess):
    tool = unique_tool()
    watching = await viewer(server, tool, presence=True)
    silent = await viewer(server, tool)
    assert await watching.expect("presence") == {
        "type": "presence",
        "tool": tool,
        "count": 2,
        "users": [],
    }
    leaving = await viewer(server, tool)
    await leaving.close()
    third = await viewer(server, tool)
    assert (await watching.expect("presence"))["count"] == 3
    # Every presence frame of that change went out before this event is published, so
    # the silent subscription's next frame shows whether it got one.
    [marker] = await publish_ok(server.url, story([tool], "marker"))
    assert (await silent.recv())["id"] == marker["id"]
    for client in (watching, silent, third):
        await client.close()


async def test_a_subscription_that_starts_asking_gets_the_state_though_it_did_not_change(
    server: ServerProcess,
):
    """Frames go out on change; one that just asked must still learn who is there."""
    tool = unique_tool()
    watching = await viewer(server, tool, presence=True)
    assert (await watching.expect("presence"))["count"] == 1
    late = await viewer(server, tool)
    assert (await watching.expect("presence"))["count"] == 2  # pushed: nothing changes now
    [subscribed] = await late.subscribe([tool], presence=True)
    assert subscribed["presence"] == 2
    assert await late.expect("presence") == {
        "type": "presence",
        "tool": tool,
        "count": 2,
        "users": [],
    }
    for client in (watching, late):
        await client.close()


async def test_a_burst_of_joins_makes_few_frames_not_one_per_join(server: ServerProcess):
    tool = unique_tool()
    watching = await viewer(server, tool, presence=True)
    assert (await watching.expect("presence"))["count"] == 1
    crowd = await asyncio.gather(*(viewer(server, tool) for _ in range(30)))
    frames = []
    while not frames or frames[-1]["count"] != 31:
        frames.append(await watching.expect("presence"))
    assert len(frames) <= 3, f"{len(frames)} frames for 30 joins"
    for client in (*crowd, watching):
        await client.close()


async def test_the_firehose_and_several_tools_in_one_read(server: ServerProcess):
    a, b = unique_tool(), unique_tool()
    clients = [await viewer(server, a), await viewer(server, a), await viewer(server, b)]
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        reply = await http.get(f"{server.url}/api/presence", params={"tools": f"{a},{b},idle"})
        assert reply.json() == {"presence": {a: 2, b: 1, "idle": 0}}
        bad = await http.get(f"{server.url}/api/presence", params={"tools": "Bad Tool"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_tool"
        none = await http.get(f"{server.url}/api/presence")
        assert none.status_code == 400
    for client in clients:
        await client.close()


async def test_viewers_of_a_killed_process_vanish_within_30_seconds(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    survivor = start_server(redis_env(redis_server, prefix))
    doomed = start_server(redis_env(redis_server, prefix))
    tool = unique_tool()
    here = await viewer(survivor, tool)
    there = [await viewer(doomed, tool), await viewer(doomed, tool)]

    async def seen(expected: int) -> bool:
        return await count_on(survivor, tool) == expected

    await async_wait_until(lambda: seen(3), what="3 viewers")
    doomed.kill()  # SIGKILL: no goodbye, its entries are left to expire
    killed_at = time.monotonic()
    await async_wait_until(lambda: seen(1), timeout=40, what="the dead process's viewers to go")
    assert time.monotonic() - killed_at <= 30

    for client in (here, *there):
        await client.close()
