"""The Python publishers: straight into Redis, and over HTTP, reaching WebSocket subscribers."""

from __future__ import annotations

import asyncio
import hashlib

import orjson
import pytest

from livefeed import AsyncPublisher, InvalidEvent, OutcomeUnknown, Publisher, Unavailable
from livefeed.brokers.redis_layout import PUBLISH_LUA
from livefeed.brokers.redis_sync import SyncRedisStore
from livefeed.errors import TooLarge, Unauthorized
from livefeed.history import parse_id
from livefeed.publisher import _HttpTarget
from tests.conftest import StartServer, redis_env
from tests.support.clients import WsClient, stored, story, unique_tool
from tests.support.redis_server import RedisServer
from tests.support.relay import Relay
from tests.support.server import PUBLISH_KEY
from tests.support.timing import async_wait_until

PUBLISH_SHA = hashlib.sha1(PUBLISH_LUA.encode()).hexdigest().encode()


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


async def test_publisher_straight_into_redis_returns_the_stored_ids_when_the_reply_is_lost(
    redis_relay: Relay, prefix: str
):
    publisher = Publisher(SyncRedisStore(redis_relay.url, prefix, 1000, 600, timeout=1.0))
    tool = unique_tool()
    await asyncio.to_thread(publisher.story, [tool], {"handle": "a"}, "warm-up")  # script cached
    redis_relay.lose_reply_to(PUBLISH_SHA)
    ids = await asyncio.to_thread(publisher.story, [tool], {"handle": "a"}, "reply lost")
    assert redis_relay.reply_lost.is_set()
    titles = await _titles(redis_relay.url, prefix, tool)
    assert list(titles.values()) == ["warm-up", "reply lost"]
    assert list(titles)[1] == ids[tool]
    publisher.close()


async def test_http_publisher_without_an_answer_raises_outcome_unknown_not_unavailable():
    """A request sent and never answered may have been published; one refused was not."""
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # reads the request, never answers, until the client hangs up
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    publisher = Publisher(http=_HttpTarget(url, PUBLISH_KEY, 1 << 20, timeout=1.0))
    with pytest.raises(OutcomeUnknown, match="may have been stored"):
        await asyncio.to_thread(publisher.activity, {"handle": "a"}, "starred", "flask")
    assert accepted.is_set()
    listener.close()
    await listener.wait_closed()
    refused = Publisher(http=_HttpTarget(url, PUBLISH_KEY, 1 << 20, timeout=1.0))  # nothing listens
    with pytest.raises(Unavailable):
        await asyncio.to_thread(refused.activity, {"handle": "a"}, "starred", "flask")


async def test_http_publisher_gives_each_event_its_own_ids_after_a_repeated_key(
    start_server: StartServer,
):
    server = start_server()
    a, b, c = unique_tool(), unique_tool(), unique_tool()
    publisher = Publisher.from_url(server.url, key=PUBLISH_KEY)
    document = {**story([a, b], "original"), "idempotency_key": "k-1"}
    [first] = await asyncio.to_thread(publisher.publish, document)
    again, new = await asyncio.to_thread(
        publisher.publish,
        {"events": [{**story([a], "retry"), "idempotency_key": "k-1"}, story([c], "new")]},
    )
    assert again == first and set(first) == {a, b}  # a repeated key: the original's ids
    assert set(new) == {c}
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


async def test_every_publisher_refuses_a_string_for_a_list_and_stores_nothing(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    server = start_server(redis_env(redis_server, prefix))
    tool = unique_tool("str")
    publishers = [
        Publisher.from_url(redis_server.url, prefix=prefix),
        Publisher.from_url(server.url, key=PUBLISH_KEY),
    ]
    for publisher in publishers:  # list("flask") had published to f, l, a, s and k
        with pytest.raises(InvalidEvent) as caught:
            await asyncio.to_thread(publisher.story, tools=tool, author={"handle": "a"}, title="x")
        assert caught.value.field == "tools"
        with pytest.raises(InvalidEvent) as caught:
            await asyncio.to_thread(
                publisher.story, tools=[tool], author={"handle": "a"}, title="x", tags="python"
            )
        assert caught.value.field == "data.tags"
    async_publisher = AsyncPublisher.from_url(redis_server.url, prefix=prefix)
    with pytest.raises(InvalidEvent):
        await async_publisher.story(tools=tool, author={"handle": "a"}, title="x")  # type: ignore[arg-type]
    await async_publisher.close()
    for name in (tool, tool[0]):
        assert stored(server.url, name) == []
    # Any other iterable is a list; a set in a raw document goes over HTTP as an array.
    story_ids = await asyncio.to_thread(
        publishers[1].story, tools=(t for t in [tool]), author={"handle": "a"}, title="gen"
    )
    [document_ids] = await asyncio.to_thread(
        publishers[1].publish,
        {"kind": "story", "tools": {tool}, "data": {"author": {"handle": "a"}, "title": "set"}},
    )
    ids = [story_ids[tool], document_ids[tool]]
    assert [event["id"] for event in stored(server.url, tool)] == ids
    for publisher in publishers:
        publisher.close()


async def test_http_publisher_refuses_a_body_over_the_limit_as_too_large(
    start_server: StartServer,
):
    server = start_server({"LIVEFEED_MAX_BODY_BYTES": "100000"})
    tool = unique_tool("big")
    publisher = Publisher.from_url(server.url, key=PUBLISH_KEY, max_body_bytes=100000)
    events = [story([tool], body="x" * 4000) for _ in range(200)]  # ~0.8 MB: the server resets
    with pytest.raises(TooLarge, match="the limit is 100000"):
        await asyncio.to_thread(publisher.publish, {"events": events})
    assert stored(server.url, tool) == []
    publisher.close()


async def _evalsha_calls(redis_url: str) -> int:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url)
    stats = await client.info("commandstats")
    await client.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def _titles(redis_url: str, prefix: str, tool: str) -> dict[str, str]:
    from livefeed.brokers.redis import RedisBroker

    broker = RedisBroker(redis_url, prefix, 1000)
    page = await broker.history(tool, 1000)
    await broker.close()
    return {event.id: orjson.loads(event.payload)["data"]["title"] for event in page.events}


async def test_async_publisher_joins_concurrent_publishes_and_answers_each_caller(
    own_redis: RedisServer, prefix: str
):
    publisher = AsyncPublisher.from_url(own_redis.url, prefix=prefix)
    tools = [unique_tool("a"), unique_tool("b"), unique_tool("c")]
    await publisher.story(tools=tools[:1], author={"handle": "a"}, title="warm up")
    calls_before = await _evalsha_calls(own_redis.url)
    results = await asyncio.gather(
        *(
            publisher.story(tools=[tools[n % 3]], author={"handle": "a"}, title=f"story {n}")
            for n in range(120)
        )
    )
    calls = await _evalsha_calls(own_redis.url) - calls_before
    # The first went alone, the rest waited for it and went together.
    assert calls <= 3, calls
    titles = {tool: await _titles(own_redis.url, prefix, tool) for tool in tools}
    for n, ids in enumerate(results):
        tool = tools[n % 3]
        assert list(ids) == [tool]
        assert titles[tool][ids[tool]] == f"story {n}"  # each caller got its own event's id
    published_in_order = [title for title in titles[tools[1]].values()]
    assert published_in_order == [f"story {n}" for n in range(1, 120, 3)]
    await publisher.close()


async def test_async_publisher_cancelled_before_its_turn_publishes_nothing_and_close_waits(
    own_redis: RedisServer, prefix: str
):
    import redis.asyncio as redis

    publisher = AsyncPublisher.from_url(own_redis.url, prefix=prefix)
    tool = unique_tool()
    await publisher.story(tools=[tool], author={"handle": "a"}, title="0")  # script loaded
    admin = redis.Redis.from_url(own_redis.url)
    await admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")  # holds the first in flight
    tasks = [
        asyncio.create_task(publisher.story(tools=[tool], author={"handle": "a"}, title=title))
        for title in ("1", "2", "3")
    ]
    coalescer = publisher._coalescer
    assert coalescer is not None
    await async_wait_until(lambda: len(coalescer._waiting) == 2, what="two waiting publishes")
    tasks[1].cancel()
    closing = asyncio.create_task(publisher.close())  # waits for what was handed over
    await asyncio.sleep(0.05)
    assert not closing.done() and not tasks[2].done()
    await admin.execute_command("CLIENT", "UNPAUSE")
    await admin.aclose()
    await closing
    first, third = tasks[0].result(), tasks[2].result()
    assert parse_id(first[tool]) < parse_id(third[tool])  # type: ignore[operator]
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert list((await _titles(own_redis.url, prefix, tool)).values()) == ["0", "1", "3"]


async def test_async_publisher_gives_every_waiting_caller_the_outage(own_redis: RedisServer):
    publisher = AsyncPublisher.from_url(own_redis.url)
    own_redis.stop()
    results = await asyncio.gather(
        *(publisher.story(tools=["flask"], author={"handle": "a"}, title="x") for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(result, Unavailable) for result in results), results
    await publisher.close()
