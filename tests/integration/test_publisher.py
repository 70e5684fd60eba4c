"""The Python publishers: straight into Redis, and over HTTP, reaching WebSocket subscribers."""

from __future__ import annotations

import asyncio

import pytest

from livefeed import AsyncPublisher, InvalidEvent, Publisher, Unavailable
from livefeed.errors import Unauthorized
from tests.conftest import StartServer, redis_env
from tests.support.clients import WsClient, unique_tool
from tests.support.redis_server import RedisServer
from tests.support.server import PUBLISH_KEY


async def subscriber(ws_url: str, *tools: str) -> WsClient:
    client = await WsClient.open(ws_url, tools=",".join(tools))
    await client.welcome()
    for _ in tools:
        await client.expect("subscribed")
    return client


async def test_publisher_straight_into_redis_reaches_a_websocket_subscriber(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    server = start_server(redis_env(redis_server, prefix))
    flask, terraform = unique_tool("flask"), unique_tool("terraform")
    client = await subscriber(server.ws_url, flask, terraform)
    publisher = Publisher.from_url(redis_server.url, prefix=prefix)
    story_ids = await asyncio.to_thread(
        publisher.story,
        tools=[flask],
        author={"handle": "laura_garcia"},
        title="From Flask",
        tags=["python"],
    )
    activity_ids = await asyncio.to_thread(
        publisher.activity, actor={"handle": "klodnitsky"}, verb="started_using", tool=terraform
    )
    first, second = await client.events(2)
    assert (first["tool"], first["id"]) == (flask, story_ids[flask])
    assert first["data"]["tags"] == ["python"]
    assert (second["tool"], second["id"]) == (terraform, activity_ids[terraform])
    assert second["data"]["verb"] == "started_using"
    publisher.close()
    await client.close()


async def test_publisher_validates_before_sending_and_raises_the_same_errors(
    redis_server: RedisServer, prefix: str
):
    publisher = Publisher.from_url(redis_server.url, prefix=prefix)
    with pytest.raises(InvalidEvent) as caught:
        publisher.story(tools=["flask"], author={"handle": "has space"}, title="x")
    assert caught.value.field == "data.author.handle"
    with pytest.raises(InvalidEvent) as caught:
        publisher.publish({"events": [{"kind": "activity", "data": {}}]})
    assert caught.value.field == "events[0].data.actor"
    publisher.close()


async def test_publisher_raises_unavailable_when_redis_is_down(own_redis: RedisServer):
    publisher = Publisher.from_url(own_redis.url)
    own_redis.stop()
    with pytest.raises(Unavailable):
        publisher.story(tools=["flask"], author={"handle": "a"}, title="lost")
    publisher.close()


async def test_async_publisher_reaches_subscribers_on_another_process(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    server = start_server(redis_env(redis_server, prefix))
    tool = unique_tool()
    client = await subscriber(server.ws_url, tool)
    publisher = AsyncPublisher.from_url(redis_server.url, prefix=prefix)
    ids = await publisher.story(
        tools=[tool], author={"handle": "a"}, title="async", idempotency_key="same"
    )
    again = await publisher.story(
        tools=[tool], author={"handle": "a"}, title="async", idempotency_key="same"
    )
    assert again == ids
    [event] = await client.events(1)
    assert event["id"] == ids[tool]
    await client.nothing_more()  # the repeated key was not delivered twice
    await publisher.close()
    await client.close()


async def test_http_publisher_reaches_an_embedded_broker_server(start_server: StartServer):
    server = start_server()
    tool = unique_tool()
    client = await subscriber(server.ws_url, tool)
    publisher = Publisher.from_url(server.url, key=PUBLISH_KEY)
    ids = await asyncio.to_thread(
        publisher.story, tools=[tool], author={"handle": "a"}, title="over http"
    )
    assert (await client.events(1))[0]["id"] == ids[tool]
    wrong = Publisher.from_url(server.url, key="nope")
    with pytest.raises(Unauthorized):
        await asyncio.to_thread(wrong.activity, actor={"handle": "a"}, verb="v", tool=tool)
    async_http = AsyncPublisher.from_url(server.url, key=PUBLISH_KEY)
    more = await async_http.activity(actor={"handle": "a"}, verb="starred", tool=tool)
    assert (await client.events(1))[0]["id"] == more[tool]
    await client.close()
