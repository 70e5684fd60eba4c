"""Several server processes on one Redis share the load."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.conftest import StartServer, redis_env
from tests.support.clients import WsClient, publish_ok, story, unique_tool
from tests.support.redis_server import RedisServer
from tests.support.timing import async_wait_until


async def test_publish_on_one_process_and_receive_on_the_other(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    one = start_server(redis_env(redis_server, prefix))
    two = start_server(redis_env(redis_server, prefix))
    tool = unique_tool()
    on_one = await WsClient.open(one.ws_url, tools=tool)
    on_two = await WsClient.open(two.ws_url, tools=tool)
    for client in (on_one, on_two):
        await client.welcome()
        await client.expect("subscribed")
    ids = [(await publish_ok(one.url, story([tool], f"n{i}")))[0]["id"] for i in range(5)]
    ids += [(await publish_ok(two.url, story([tool], f"m{i}")))[0]["id"] for i in range(5)]
    for client in (on_one, on_two):
        assert [e["id"] for e in await client.events(10)] == ids
        await client.close()


async def test_one_redis_subscription_per_tool_per_process(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    server = start_server(redis_env(redis_server, prefix))
    tool = unique_tool()
    redis = aioredis.Redis.from_url(redis_server.url)
    channel = f"{prefix}c:{tool}"

    async def subscriptions() -> int:
        [(_, count)] = await redis.pubsub_numsub(channel)
        return int(count)

    clients = [await WsClient.subscribed(server.ws_url, tool) for _ in range(3)]
    assert await subscriptions() == 1
    for client in clients[:2]:
        await client.close()
    assert await subscriptions() == 1
    await clients[2].close()

    async def released() -> bool:
        return await subscriptions() == 0

    await async_wait_until(released, what="the Redis subscription to be dropped")
    await redis.aclose()
