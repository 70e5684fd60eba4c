"""The Redis broker's live link: authentication from the URL, refusal, bursts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as redis

from livefeed.brokers.redis import RedisBroker
from livefeed.brokers.redis_layout import Layout
from livefeed.envelope import envelope_tail
from livefeed.events import prepare
from tests.backends.conftest import Collector
from tests.support.clients import story
from tests.support.redis_server import RedisServer
from tests.support.timing import async_wait_until

TS = 1764040000.125


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    server = RedisServer(password="s3cret-pw")
    server.start()
    yield server
    server.close()


@contextlib.asynccontextmanager
async def live_broker(
    url: str, prefix: str, *tools: str
) -> AsyncIterator[tuple[RedisBroker, Collector]]:
    """A started broker subscribed to ``tools``, its live events collected."""
    broker = RedisBroker(url, prefix)
    collect = Collector()
    broker.on_event = collect
    try:
        await broker.start()
        for tool in tools:
            await broker.subscribe(tool)
        yield broker, collect
    finally:
        await broker.close()


async def test_a_password_in_the_url_authenticates_the_live_link(
    locked_redis: RedisServer, prefix: str
) -> None:
    async with live_broker(locked_redis.url, prefix, "flask") as (broker, collect):
        published = await broker.publish(prepare({"events": [story(["flask"])]}), TS)
        [event] = await collect.wait_for(1)
        assert event.id == published[0][0][1]
        assert broker.connected


async def test_a_wrong_password_keeps_the_link_down_and_says_why(
    locked_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = locked_redis.url.replace("s3cret-pw", "wrong-pw")
    caplog.set_level(logging.WARNING, logger="livefeed.broker")
    async with live_broker(url, prefix) as (broker, _):
        await async_wait_until(lambda: broker.reconnects >= 2, what="two refused attempts")
        assert not broker.connected
        refusals = [
            r.getMessage() for r in caplog.records if "refused the live link" in r.getMessage()
        ]
        assert refusals and "WRONGPASS" in refusals[0]


async def test_a_burst_read_at_once_arrives_whole_and_in_order(
    redis_server: RedisServer, prefix: str
) -> None:
    async with live_broker(redis_server.url, prefix, "flask", "django") as (broker, collect):
        documents = [story(["flask"] if i % 3 else ["django"]) for i in range(300)]
        published = await broker.publish(prepare({"events": documents}), TS)
        events = await collect.wait_for(300)
        assert [e.id for e in events] == [ids[0][1] for ids in published]
        assert [e.channel for e in events] == [ids[0][0] for ids in published]


async def test_a_malformed_live_message_is_dropped_with_a_warning(
    redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    good_tail = envelope_tail("story", TS, b'{"title":"ok"}')
    malformed = [
        b"1-0 flask not-an-envelope",
        b"1-0 flask " + good_tail.replace(b'"ts":', b'"at":'),
        b"1-0 flask " + good_tail[:-3],  # cut short
        b"1-0 Flask! " + good_tail,
        b"1-x flask " + good_tail,
        b"99999999999999999999-0 flask " + good_tail,  # beyond any id Redis issues
        b"1-0 flask",
    ]
    async with live_broker(redis_server.url, prefix, "flask") as (broker, collect):
        client = redis.Redis.from_url(redis_server.url)
        for data in malformed:
            await client.publish(Layout(prefix).channel("flask"), data)
        await client.aclose()
        published = await broker.publish(prepare({"events": [story(["flask"])]}), TS)
        await collect.wait_for(1)
        assert [e.id for e in collect.events] == [published[0][0][1]]
    dropped = [r for r in caplog.records if "dropped a malformed message" in r.getMessage()]
    assert len(dropped) == len(malformed)
    assert all(r.levelno == logging.WARNING for r in dropped)


async def test_subscribes_abandoned_during_an_outage_leave_nothing_behind(
    own_redis: RedisServer, prefix: str
):
    broker = RedisBroker(own_redis.url, prefix)
    await broker.start()
    try:
        own_redis.stop()
        await async_wait_until(lambda: not broker.connected, what="the outage to be seen")
        # Viewers join and leave tools while Redis is away: their subscribes wait, and
        # are cancelled when they leave.
        waiting = [asyncio.create_task(broker.subscribe(f"tool-{i}")) for i in range(50)]
        await asyncio.sleep(0)  # each subscribe is now waiting for its confirmation
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        for i in range(50):
            await broker.unsubscribe(f"tool-{i}")
        assert broker._waiters == {}  # nothing kept per name asked for
    finally:
        await broker.close()
