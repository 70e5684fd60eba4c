"""What a Redis publish answers when its reply is lost, and when Redis's data refuses it.

The broker tells "nothing was stored" (``Unavailable``) only when that is known; a
publish whose reply is lost is settled with Redis before it answers.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import redis.asyncio as aioredis

from livefeed import Publisher
from livefeed.brokers.redis import RedisBroker
from livefeed.brokers.redis_layout import PUBLISH_LUA, Layout
from livefeed.coalesce import PublishCoalescer
from livefeed.errors import BrokerError, OutcomeUnknown, Unavailable
from livefeed.events import prepare
from livefeed.types import FIREHOSE
from tests.backends.conftest import Collector
from tests.support.clients import story
from tests.support.redis_server import RedisServer
from tests.support.relay import Relay
from tests.support.timing import async_wait_until

TS = 1764040000.125
PUBLISH_SHA = hashlib.sha1(PUBLISH_LUA.encode()).hexdigest().encode()


async def publish(broker: RedisBroker, *documents: dict) -> list[list[tuple[str, str]]]:
    return await broker.publish(prepare({"events": list(documents)}), TS)


async def watched_broker(
    url: str, prefix: str, settle_within: float = 10.0
) -> tuple[RedisBroker, Collector]:
    """A started broker subscribed to flask, waiting 1 s for a reply, its script cached."""
    broker = RedisBroker(url, prefix, timeout=1.0, settle_within=settle_within)
    collect = Collector()
    broker.on_event = collect
    await broker.start()
    await broker.subscribe("flask")
    await publish(broker, story(["flask"], "warm-up"))  # from now on EVALSHA runs it
    await collect.wait_for(1)
    return broker, collect


async def delivered_ids(broker: RedisBroker, collect: Collector) -> list[str]:
    """Every id delivered live, once a marker published last has arrived."""
    [[(_, marker)]] = await publish(broker, story(["flask"], "marker"))
    while collect.events[-1].id != marker:
        await collect.wait_for(len(collect.events) + 1)
    return [event.id for event in collect.events]


async def test_a_publish_whose_reply_is_lost_answers_the_ids_it_was_stored_with(
    redis_relay: Relay, prefix: str
):
    broker, collect = await watched_broker(redis_relay.url, prefix)
    redis_relay.lose_reply_to(PUBLISH_SHA)
    [[(tool, event_id)]] = await publish(broker, story(["flask"], "reply lost"))
    assert tool == "flask"
    assert redis_relay.reply_lost.is_set()
    stored = [event.id for event in (await broker.history("flask", 10)).events]
    assert stored[1:] == [event_id]
    assert (await delivered_ids(broker, collect))[1:-1] == [event_id]  # once
    await broker.close()


async def test_a_publish_held_back_is_unavailable_and_a_late_run_stores_nothing(
    redis_relay: Relay, prefix: str
):
    broker, collect = await watched_broker(redis_relay.url, prefix)
    redis_relay.hold_request(PUBLISH_SHA)
    with pytest.raises(Unavailable, match="nothing of it was stored"):
        await publish(broker, story(["flask"], "held back"))
    assert redis_relay.request_held.is_set()
    await redis_relay.release_requests()  # the command reaches Redis after all, too late
    await asyncio.wait_for(redis_relay.late_reply.wait(), 10)
    assert b"LIVEFEED_SETTLED" in b"".join(redis_relay.late_replies)
    assert len((await broker.history("flask", 10)).events) == 1  # the warm-up
    assert len(await delivered_ids(broker, collect)) == 2  # the warm-up and the marker
    await broker.close()


async def test_a_publish_whose_reply_is_lost_while_redis_stays_away_is_outcome_unknown(
    own_redis: RedisServer, redis_relay: Relay, prefix: str
):
    broker, _ = await watched_broker(redis_relay.url, prefix, settle_within=1.0)
    redis_relay.lose_reply_to(PUBLISH_SHA)
    publishing = asyncio.create_task(publish(broker, story(["flask"], "stored, then silence")))
    await asyncio.wait_for(redis_relay.reply_lost.wait(), 10)  # Redis ran it and answered
    await asyncio.to_thread(own_redis.stop)
    with pytest.raises(OutcomeUnknown, match="may have been stored"):
        await publishing
    await asyncio.to_thread(own_redis.start)
    titles = [e.payload for e in (await broker.history("flask", 10)).events]
    assert len(titles) == 2 and b"stored, then silence" in titles[1]  # it was, indeed
    await broker.close()


async def test_a_publish_to_a_stopped_redis_is_unavailable_at_once(
    own_redis: RedisServer, prefix: str
):
    broker = RedisBroker(own_redis.url, prefix)
    await publish(broker, story(["flask"], "before"))
    await asyncio.to_thread(own_redis.stop)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Unavailable):
        await publish(broker, story(["flask"], "refused"))
    assert loop.time() - started < 1.0  # refused before sending: nothing to settle
    await asyncio.to_thread(own_redis.start)
    assert len((await broker.history("flask", 10)).events) == 1
    await broker.close()


async def test_a_batch_meeting_a_key_of_the_wrong_type_stores_nothing_and_names_it(
    redis_server: RedisServer, prefix: str
):
    broker = RedisBroker(redis_server.url, prefix)
    collect = Collector()
    broker.on_event = collect
    await broker.start()
    await broker.subscribe("flask")
    layout = Layout(prefix)
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.set(layout.stream("django"), "not a stream")
    with pytest.raises(BrokerError, match=f"{layout.stream('django')} holds a string"):
        await publish(broker, story(["flask"], "first"), story(["django"], "second"))
    await admin.delete(layout.stream("django"))
    await admin.rpush(f"{prefix}idem:k-1", "not a string")
    with pytest.raises(BrokerError, match=f"{prefix}idem:k-1 holds a list"):
        await publish(
            broker, story(["flask"], "first"), {**story(["django"]), "idempotency_key": "k-1"}
        )
    for channel in ("flask", "django", FIREHOSE):
        assert (await broker.history(channel, 10)).events == []
    [[(_, marker)]] = await publish(broker, story(["flask"], "marker"))
    [event] = await collect.wait_for(1)
    assert event.id == marker  # nothing of the refused batches was delivered either
    await admin.aclose()
    await broker.close()


async def test_a_refused_key_in_a_coalesced_group_fails_only_its_own_caller(
    redis_server: RedisServer, prefix: str
):
    broker = RedisBroker(redis_server.url, prefix)
    client = aioredis.Redis.from_url(redis_server.url)
    await client.set(Layout(prefix).stream("django"), "not a stream")
    coalescer = PublishCoalescer(broker, 1000)
    try:
        first = asyncio.create_task(coalescer.publish(prepare(story(["flask"], "first"))))
        await asyncio.sleep(0)  # let it go out: the next two wait and go out together
        bad = asyncio.create_task(coalescer.publish(prepare(story(["django"], "bad key"))))
        innocent = asyncio.create_task(coalescer.publish(prepare(story(["flask"], "ok"))))
        await first
        with pytest.raises(BrokerError):
            await bad
        [[(tool, _)]] = await innocent  # stored, whichever group it went out in
        assert tool == "flask"
        titles = [e.payload for e in (await broker.history("flask", 10)).events]
        assert [b'"ok"' in payload for payload in titles] == [False, True]
    finally:
        await client.aclose()
        await broker.close()


async def test_a_batch_the_redis_user_may_not_publish_stores_nothing_and_says_why(
    redis_server: RedisServer, prefix: str
):
    """A Redis user whose ACL grants livefeed's keys but not its channels (Redis 7 gives
    a new user no channels unless told to): PUBLISH is refused inside the script, after
    the writes before it. Found by publishing as such a user: each attempt answered
    "nothing was stored" and left its event in the first tool's history."""
    admin = aioredis.Redis.from_url(redis_server.url)
    user = f"lf-{prefix.rstrip(':')}"
    await admin.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", f"~{prefix}*", "+@all", "resetchannels"
    )
    url = f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0"
    broker = RedisBroker(url, prefix)
    sync = Publisher.from_url(url, prefix=prefix, history_size=1000)
    try:
        keyed = {**story(["flask", "django"], "denied"), "idempotency_key": "k-acl"}
        with pytest.raises(BrokerError, match=f"may not run PUBLISH {prefix}c:"):
            await publish(broker, keyed)
        with pytest.raises(BrokerError, match=f"may not run PUBLISH {prefix}c:"):
            await asyncio.to_thread(sync.publish, keyed)
        assert await admin.keys(f"{prefix}*") == []  # no history, no idempotency key
        # Granted the channels, the same user publishes the same batch once.
        await admin.execute_command("ACL", "SETUSER", user, f"&{prefix}c:*")
        first = await publish(broker, keyed)
        assert [tool for tool, _ in first[0]] == ["flask", "django"]
        assert await publish(broker, keyed) == first  # its key was stored with it
        for channel, stored in (("flask", 1), ("django", 1), (FIREHOSE, 2)):
            assert len((await broker.history(channel, 10)).events) == stored
    finally:
        sync.close()
        await broker.close()
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_a_late_publish_is_settled_alone_and_the_ones_in_flight_beside_it_answered(
    redis_relay: Relay, prefix: str
):
    broker, collect = await watched_broker(redis_relay.url, prefix)  # replies due in 1 s
    settled: list[Exception] = []
    settle = broker._settle_publish

    async def spy(operation: str, lost: Exception) -> list[list[tuple[str, str]]]:
        settled.append(lost)
        return await settle(operation, lost)

    broker._settle_publish = spy  # type: ignore[method-assign]
    redis_relay.hold_answers()  # Redis runs the scripts; their replies wait in the relay
    late = asyncio.create_task(publish(broker, story(["flask"], "late")))
    await async_wait_until(lambda: redis_relay.held_answers, what="the first reply held")
    # Half a timeout later, so that this one is still within its own when replies flow.
    await asyncio.sleep(0.5)
    beside = asyncio.create_task(publish(broker, story(["flask"], "beside")))
    await async_wait_until(lambda: settled, what="the first publish to time out")
    redis_relay.release_answers()
    [[(_, late_id)]] = await late  # settled: Redis did store it
    [[(_, beside_id)]] = await beside  # answered on the link it was sent on
    assert len(settled) == 1 and isinstance(settled[0], TimeoutError)
    assert (await delivered_ids(broker, collect))[1:-1] == [late_id, beside_id]
    await broker.close()


async def test_a_publish_after_its_link_ended_goes_out_on_a_new_one(
    redis_server: RedisServer, prefix: str
):
    broker, collect = await watched_broker(redis_server.url, prefix)
    assert broker._commands is not None
    broker._commands.close()  # as when Redis closes a client idle past its `timeout`
    [[(_, event_id)]] = await publish(broker, story(["flask"], "after"))
    assert (await delivered_ids(broker, collect))[1:-1] == [event_id]
    await broker.close()


async def test_closing_a_broker_while_it_connects_leaves_no_connection_behind(
    redis_relay: Relay, own_redis: RedisServer, prefix: str
):
    # Database 1: connecting then waits for the answer to SELECT, which the relay holds.
    broker = RedisBroker(redis_relay.url.removesuffix("/0") + "/1", prefix)
    admin = aioredis.Redis.from_url(own_redis.url)
    clients_before = len(await admin.client_list())
    redis_relay.hold_answers()
    publishing = asyncio.create_task(publish(broker, story(["flask"], "never")))
    await async_wait_until(lambda: redis_relay.held_answers, what="the SELECT's answer held")
    await broker.close()
    redis_relay.release_answers()
    with pytest.raises(Unavailable, match="the broker is closed"):
        await publishing

    async def closed_again() -> bool:
        return len(await admin.client_list()) == clients_before

    await async_wait_until(closed_again, what="the connection made meanwhile to be closed")
    await admin.aclose()
