"""One behavioural suite for every broker: the promises of livefeed.brokers.base."""

from __future__ import annotations

import logging

import orjson
import pytest
import redis.asyncio as redis

from livefeed.brokers.base import Broker
from livefeed.brokers.redis import RedisBroker
from livefeed.brokers.redis_layout import Layout
from livefeed.envelope import envelope_tail
from livefeed.events import prepare
from livefeed.history import parse_id
from livefeed.types import FIREHOSE
from tests.backends.conftest import Collector, MakeBroker
from tests.support.clients import activity, story
from tests.support.redis_server import RedisServer
from tests.support.timing import async_wait_until

TS = 1764040000.125


async def started(make_broker: MakeBroker, **options: int) -> Broker:
    broker = make_broker(**options)
    await broker.start()
    return broker


async def publish(broker: Broker, *documents: dict) -> list[list[tuple[str, str]]]:
    return await broker.publish(prepare({"events": list(documents)}), TS)


def keys(ids: list[str]) -> list[tuple[int, int]]:
    return [parse_id(i) for i in ids]  # type: ignore[misc]


async def test_ids_strictly_increase_per_tool_and_on_the_firehose(make_broker: MakeBroker):
    broker = await started(make_broker)
    published = await publish(broker, *[story(["flask"], f"s{i}") for i in range(30)])
    ids = [pairs[0][1] for pairs in published]
    assert keys(ids) == sorted(keys(ids)) and len(set(ids)) == 30
    firehose = await broker.history(FIREHOSE, 100)
    assert [e.key for e in firehose.events] == sorted({e.key for e in firehose.events})
    assert len(firehose.events) == 30


async def test_a_story_about_several_tools_gets_each_tools_own_id(make_broker: MakeBroker):
    broker = await started(make_broker)
    [pairs] = await publish(broker, story(["flask", "django", "redis"]))
    assert [tool for tool, _ in pairs] == ["flask", "django", "redis"]
    for tool, event_id in pairs:
        [event] = (await broker.history(tool, 10)).events
        assert event.id == event_id and event.tool == tool
    firehose = (await broker.history(FIREHOSE, 10)).events
    assert sorted(e.tool for e in firehose) == ["django", "flask", "redis"]


async def test_envelope_carries_contract_fields_and_firehose_marks_its_channel(
    make_broker: MakeBroker,
):
    broker = await started(make_broker)
    [[(_, event_id)]] = await publish(broker, activity("terraform"))
    [event] = (await broker.history("terraform", 1)).events
    envelope = orjson.loads(event.payload)
    assert envelope == {
        "type": "event",
        "tool": "terraform",
        "id": event_id,
        "kind": "activity",
        "ts": TS,
        "data": {
            "actor": {"handle": "klodnitsky", "name": None, "avatar_url": None},
            "verb": "started_using",
            "tool": "terraform",
        },
    }
    [on_firehose] = (await broker.history(FIREHOSE, 1)).events
    firehose_envelope = orjson.loads(on_firehose.payload)
    assert firehose_envelope["channel"] == "*" and firehose_envelope["tool"] == "terraform"
    assert on_firehose.kind == "activity"


async def test_history_is_the_last_n_oldest_first(make_broker: MakeBroker):
    broker = await started(make_broker)
    published = await publish(broker, *[story(["flask"], f"s{i}") for i in range(10)])
    page = await broker.history("flask", 4)
    assert [e.id for e in page.events] == [p[0][1] for p in published[-4:]]
    assert page.recovered is None
    assert (await broker.history("never-published", 5)).events == []


async def test_since_returns_what_came_after_the_cursor(make_broker: MakeBroker):
    broker = await started(make_broker)
    ids = [p[0][1] for p in await publish(broker, *[story(["flask"]) for _ in range(8)])]
    page = await broker.history("flask", 100, parse_id(ids[2]))
    assert [e.id for e in page.events] == ids[3:]
    assert page.recovered is True
    page = await broker.history("flask", 2, parse_id(ids[2]))
    assert [e.id for e in page.events] == ids[3:5]
    latest = await broker.history("flask", 100, parse_id(ids[-1]))
    assert latest.events == [] and latest.recovered is True


async def test_a_cursor_older_than_kept_history_is_not_recovered(make_broker: MakeBroker):
    broker = await started(make_broker, history_size=5)
    ids = [p[0][1] for p in await publish(broker, *[story(["flask"]) for _ in range(12)])]
    assert [e.id for e in (await broker.history("flask", 100)).events] == ids[-5:]
    lost = await broker.history("flask", 100, parse_id(ids[3]))
    assert lost.recovered is False
    assert [e.id for e in lost.events] == ids[-5:]  # replayed from the oldest kept
    # The newest trimmed id is still a complete cursor: nothing after it was trimmed.
    edge = await broker.history("flask", 100, parse_id(ids[6]))
    assert edge.recovered is True and [e.id for e in edge.events] == ids[7:]


async def test_a_cursor_this_history_never_issued_is_not_recovered(make_broker: MakeBroker):
    broker = await started(make_broker)
    ids = [p[0][1] for p in await publish(broker, *[story(["flask"]) for _ in range(3)])]
    ms, _ = parse_id(ids[-1])  # type: ignore[misc]
    future = await broker.history("flask", 100, (ms + 60_000, 0))
    assert future.recovered is False
    unknown = await broker.history("never-published", 100, (ms, 0))
    assert unknown.recovered is False and unknown.events == []


async def test_the_zero_cursor_means_from_the_beginning(make_broker: MakeBroker):
    broker = await started(make_broker)
    ids = [p[0][1] for p in await publish(broker, *[story(["flask"]) for _ in range(3)])]
    page = await broker.history("flask", 100, (0, 0))
    assert page.recovered is True and [e.id for e in page.events] == ids
    empty = await broker.history("never-published", 100, (0, 0))
    assert empty.recovered is True and empty.events == []


async def test_a_repeated_idempotency_key_is_stored_and_delivered_once(make_broker: MakeBroker):
    broker = await started(make_broker)
    collect = Collector()
    broker.on_event = collect
    await broker.subscribe("flask")
    first = await publish(broker, {**story(["flask"]), "idempotency_key": "k-1"})
    again = await publish(broker, {**story(["flask"], "edited"), "idempotency_key": "k-1"})
    marker = await publish(broker, story(["flask"], "marker"))
    assert again == first
    await collect.wait_for(2)
    assert [e.id for e in collect.events] == [first[0][0][1], marker[0][0][1]]
    assert len((await broker.history("flask", 100)).events) == 2
    # Within one batch too: the second use of a key returns the first's ids.
    both = await publish(
        broker,
        {**story(["flask"]), "idempotency_key": "k-2"},
        {**story(["flask"]), "idempotency_key": "k-2"},
    )
    assert both[0] == both[1]


async def test_idempotency_keys_expire(make_broker: MakeBroker):
    broker = await started(make_broker, idempotency_ttl=1)
    first = await publish(broker, {**story(["flask"]), "idempotency_key": "short"})

    async def stored_again() -> bool:
        again = await publish(broker, {**story(["flask"]), "idempotency_key": "short"})
        return again != first

    # Until the key expires (after 1 s) each try returns the first ids and stores nothing.
    await async_wait_until(stored_again, what="the idempotency key to expire")
    assert len((await broker.history("flask", 100)).events) == 2


async def test_live_events_flow_in_order_after_subscribe_and_stop_after_unsubscribe(
    make_broker: MakeBroker,
):
    broker = await started(make_broker)
    collect = Collector()
    broker.on_event = collect
    await broker.subscribe("flask")
    ids = [p[0][1] for p in await publish(broker, *[story(["flask"]) for _ in range(20)])]
    await publish(broker, story(["django"]))  # not subscribed: not delivered
    await collect.wait_for(20)
    assert [e.id for e in collect.events] == ids
    assert {e.channel for e in collect.events} == {"flask"}
    await broker.unsubscribe("flask")
    await broker.subscribe("marker")
    await publish(broker, story(["flask"]))
    [[(_, marker_id)]] = await publish(broker, story(["marker"]))
    await collect.wait_for(21)
    assert collect.events[-1].id == marker_id and len(collect.events) == 21


async def test_the_firehose_receives_every_tools_events_with_its_own_ids(
    make_broker: MakeBroker,
):
    broker = await started(make_broker)
    collect = Collector()
    broker.on_event = collect
    await broker.subscribe(FIREHOSE)
    await publish(broker, story(["flask", "django"]), activity("terraform"))
    events = await collect.wait_for(3)
    assert [e.tool for e in events] == ["flask", "django", "terraform"]
    assert {e.channel for e in events} == {FIREHOSE}
    assert [e.key for e in events] == sorted(e.key for e in events)
    history = (await broker.history(FIREHOSE, 10)).events
    assert [e.id for e in history] == [e.id for e in events]


async def test_a_batch_is_stored_in_order(make_broker: MakeBroker):
    broker = await started(make_broker)
    published = await publish(broker, *[story(["flask"], f"n{i}") for i in range(50)])
    titles = [
        orjson.loads(e.payload)["data"]["title"]
        for e in (await broker.history("flask", 100)).events
    ]
    assert titles == [f"n{i}" for i in range(50)]
    assert len(published) == 50


async def test_ping_answers_while_the_backend_is_up(make_broker: MakeBroker):
    broker = await started(make_broker)
    await broker.ping()


async def test_a_malformed_history_entry_is_skipped_with_a_warning(
    redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
):
    broker = RedisBroker(redis_server.url, prefix)
    [[(_, first)]] = await publish(broker, story(["flask"]))
    client = redis.Redis.from_url(redis_server.url)
    # Entries another writer (or an older version) left under our prefix.
    layout = Layout(prefix)
    good_tail = envelope_tail("story", TS, b'{"title":"ok"}')
    await client.xadd(layout.stream("flask"), {"x": "no envelope"})
    await client.xadd(layout.stream("flask"), {"d": b',"kind":"story","data":{}}'})  # no ts
    await client.xadd(layout.stream(FIREHOSE), {"d": good_tail})  # no tool
    [[(_, last)]] = await publish(broker, story(["flask"]))
    newest = await broker.history("flask", 10)
    after_first = await broker.history("flask", 10, parse_id(first))
    firehose = await broker.history(FIREHOSE, 10)
    await client.aclose()
    await broker.close()
    assert [e.id for e in newest.events] == [first, last]
    assert [e.id for e in after_first.events] == [last] and after_first.recovered
    assert [e.tool for e in firehose.events] == ["flask", "flask"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("malformed entries in the history of flask" in w for w in warnings) == 2
    assert sum("malformed entries in the history of *" in w for w in warnings) == 1


async def test_deployments_on_two_databases_of_one_redis_do_not_hear_each_other(
    redis_server: RedisServer, prefix: str
):
    # Same server, same prefix, databases 0 and 1 (say production and staging).
    url_1 = redis_server.url.removesuffix("/0") + "/1"
    brokers = [RedisBroker(redis_server.url, prefix), RedisBroker(url_1, prefix)]
    collectors = [Collector(), Collector()]
    try:
        for broker, collect in zip(brokers, collectors, strict=True):
            await broker.start()
            broker.on_event = collect
            await broker.subscribe("flask")
        await publish(brokers[0], story(["flask"], "on database 0"))
        await publish(brokers[1], story(["flask"], "on database 1"))
        # Redis delivers one connection's messages in order: a leak would come first.
        [got_0] = await collectors[0].wait_for(1)
        [got_1] = await collectors[1].wait_for(1)
        assert b"on database 0" in got_0.payload and b"on database 1" in got_1.payload
        # and each stored its event in its own database
        for broker, got in zip(brokers, [got_0, got_1], strict=True):
            assert [e.id for e in (await broker.history("flask", 10)).events] == [got.id]
    finally:
        for broker in brokers:
            await broker.close()
