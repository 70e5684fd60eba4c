"""The Redis broker's live link: authentication from the URL, refusal, bursts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from livefeed.brokers.redis import RedisBroker
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
