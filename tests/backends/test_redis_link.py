"""The Redis broker's raw links: the live link (authentication from the URL, refusal,
bursts) and the command link the publish script runs on (pipelined, in step)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import hiredis
import pytest
import redis.asyncio as redis

from livefeed.brokers.redis import RedisBroker
from livefeed.brokers.redis_layout import Layout
from livefeed.brokers.redis_link import CommandLink, Endpoint, LinkError, command
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


@contextlib.asynccontextmanager
async def command_link(url: str) -> AsyncIterator[CommandLink]:
    """A command link to ``url``, closed at the end."""
    link = await CommandLink.open(Endpoint.from_url(url), 5.0)
    try:
        yield link
    finally:
        link.close()


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


async def test_the_command_link_answers_pipelined_calls_each_with_its_own_reply(
    redis_server: RedisServer,
) -> None:
    async with command_link(redis_server.url) as link:
        calls = [link.call(command("ECHO", f"reply {i}")) for i in range(200)]
        assert await asyncio.gather(*calls) == [f"reply {i}".encode() for i in range(200)]


async def test_a_caller_that_stops_waiting_leaves_the_command_link_in_step(
    redis_server: RedisServer,
) -> None:
    async with command_link(redis_server.url) as link:
        abandoned = link.call(command("ECHO", "for nobody"))
        abandoned.cancel()  # sent; its reply comes first and must go to no one
        assert await link.call(command("ECHO", "mine")) == b"mine"
        assert not link.closed.done()


async def test_an_error_reply_answers_its_own_call_and_the_link_goes_on(
    redis_server: RedisServer, prefix: str
) -> None:
    async with command_link(redis_server.url) as link:
        key = f"{prefix}text"
        assert await link.call(command("SET", key, "not a number")) == b"OK"
        refused, after = await asyncio.gather(
            link.call(command("INCR", key)), link.call(command("ECHO", "after"))
        )
        assert isinstance(refused, hiredis.ReplyError) and "not an integer" in str(refused)
        assert after == b"after"


async def test_calls_waiting_when_the_command_link_ends_fail_and_later_ones_are_not_sent(
    own_redis: RedisServer, prefix: str
) -> None:
    link = await CommandLink.open(Endpoint.from_url(own_redis.url), 5.0)
    waiting = link.call(command("BLPOP", f"{prefix}never", 0))  # answered only by a push
    own_redis.stop()
    with pytest.raises(LinkError, match="closed the command link"):
        await asyncio.wait_for(waiting, 10)
    with pytest.raises(LinkError, match="not sent"):
        link.call(command("PING"))


async def test_the_command_link_authenticates_and_selects_the_database_of_the_url(
    locked_redis: RedisServer, prefix: str
) -> None:
    url = locked_redis.url.removesuffix("/0") + "/2"
    async with command_link(url) as link:
        assert await link.call(command("SET", f"{prefix}where", "here")) == b"OK"
    client = redis.Redis.from_url(url)
    try:
        assert await client.get(f"{prefix}where") == b"here"
    finally:
        await client.aclose()


async def test_a_publish_after_redis_forgot_the_script_sends_the_script_itself(
    redis_server: RedisServer, prefix: str
) -> None:
    async with live_broker(redis_server.url, prefix, "flask") as (broker, collect):
        await broker.publish(prepare({"events": [story(["flask"], "before")]}), TS)
        client = redis.Redis.from_url(redis_server.url)
        await client.script_flush()
        await client.aclose()
        [[(_, after)]] = await broker.publish(prepare({"events": [story(["flask"], "after")]}), TS)
        events = await collect.wait_for(2)
        assert events[1].id == after
        assert [e.id for e in (await broker.history("flask", 10)).events][-1] == after
