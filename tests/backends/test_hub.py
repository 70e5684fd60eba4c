"""The hub over every broker: gap-free joins under concurrent publishing, fan-out."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest
import redis.asyncio as redis

from livefeed.brokers.base import Broker
from livefeed.brokers.redis import RedisBroker
from livefeed.brokers.redis_layout import Layout
from livefeed.envelope import Batch, Event
from livefeed.events import prepare
from livefeed.history import parse_id
from livefeed.hub import Hub, Writer
from tests.backends.conftest import MakeBroker
from tests.support.clients import story
from tests.support.redis_server import RedisServer
from tests.support.relay import Relay
from tests.support.timing import TIMEOUT, async_wait_until


class Recorder:
    """A subscriber that keeps what the hub gives it, as a session's outbox would."""

    writer = None  # takes every batch through its sink, as a queueing outbox does

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.replayed = 0
        self.closed: tuple[int, str] | None = None
        self.batches: list[Batch] = []

    def sink(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.events.extend(batch.events)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def join(
    hub: Hub,
    tool: str,
    subscriber: Recorder,
    history: int = 0,
    since: tuple[int, int] | None = None,
) -> None:
    """What a session does: join, send the replay, go live, send the buffered rest."""
    page = await hub.join(tool, subscriber, history, since)
    subscriber.events.extend(page.events)
    subscriber.replayed = len(page.events)
    last = page.events[-1].key if page.events else since
    buffered, _ = await hub.go_live(tool, subscriber, last)
    subscriber.events.extend(buffered)


async def publisher(broker: Broker, tool: str, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ids = []
    for i in range(count):
        [[(_, event_id)]] = await broker.publish(prepare(story([tool], f"p{seed}-{i}")), 1.0)
        ids.append(event_id)
        await asyncio.sleep(rng.random() * 0.002)  # ~125 events/s each, interleaved
    return ids


async def test_a_join_mid_stream_misses_and_repeats_nothing(make_broker: MakeBroker):
    broker = make_broker()
    await broker.start()
    hub = Hub(broker, history_size=1000)
    early, late = Recorder(), Recorder()
    await join(hub, "flask", early)
    publishers = [asyncio.create_task(publisher(broker, "flask", 125, seed)) for seed in range(4)]
    await async_wait_until(lambda: len(early.events) >= 100, what="the stream to be under way")
    await join(hub, "flask", late, history=20)
    joined_at = len(early.events)
    published = sorted((i for ids in await asyncio.gather(*publishers) for i in ids), key=parse_id)
    await async_wait_until(lambda: len(early.events) == 500, what="every event to arrive")
    await async_wait_until(
        lambda: late.events and late.events[-1].id == published[-1],
        what="the late subscriber to catch up",
    )
    assert [e.id for e in early.events] == published
    got = [e.id for e in late.events]
    start = published.index(got[0])
    assert got == published[start:], "the late subscriber saw a gap or a repeat"
    assert late.replayed == 20
    assert joined_at < 480, "the late subscriber should join while publishing goes on"
    await hub.close()


async def test_subscribers_of_a_channel_share_the_same_event_objects(make_broker: MakeBroker):
    broker = make_broker()
    await broker.start()
    hub = Hub(broker, history_size=1000)
    subscribers = [Recorder() for _ in range(5)]
    for subscriber in subscribers:
        await join(hub, "flask", subscriber)
    await broker.publish(prepare(story(["flask"])), 1.0)
    await async_wait_until(lambda: all(s.events for s in subscribers))
    first = subscribers[0].batches[0]
    assert all(s.batches[0] is first for s in subscribers)  # one batch, shared
    assert first.ws_bytes is subscribers[1].batches[0].ws_bytes  # encoded once

    assert hub.channels == {"flask": 5}
    for subscriber in subscribers:
        hub.leave("flask", subscriber)
    assert hub.channels == {}
    await hub.close()


async def test_a_replaying_subscriber_that_falls_too_far_behind_is_closed(
    make_broker: MakeBroker,
):
    broker = make_broker()
    await broker.start()
    hub = Hub(broker, history_size=1000, buffer_limit=10)
    slow = Recorder()
    await hub.join("flask", slow, history=5)  # parked, never goes live
    await broker.publish(prepare({"events": [story(["flask"]) for _ in range(11)]}), 1.0)
    await async_wait_until(lambda: slow.closed is not None, what="the slow subscriber to close")
    assert slow.closed is not None and slow.closed[0] == 4008
    await hub.close()


async def test_a_burst_is_handed_over_as_one_batch_per_pass(make_broker: MakeBroker):
    broker = make_broker()
    await broker.start()
    hub = Hub(broker, history_size=1000)
    subscriber = Recorder()
    await join(hub, "flask", subscriber)
    published = await broker.publish(
        prepare({"events": [story(["flask"]) for _ in range(50)]}), 1.0
    )
    await async_wait_until(lambda: len(subscriber.events) == 50)
    assert [e.id for e in subscriber.events] == [pairs[0][1] for pairs in published]
    # The embedded broker delivers a batch in one pass: one hand-over, one joined write.
    # Redis delivers what arrives together in one read together.
    assert len(subscriber.batches) < 50
    joined = subscriber.batches[0]
    assert joined.ws_bytes == b"".join(e.ws_frame for e in joined.events)
    await hub.close()


class BackingUp(Recorder):
    """A subscriber with a writer, as a direct WebSocket outbox: its socket takes
    ``room`` whole writes, then only ``last_takes`` bytes of the next one (``None``:
    that send fails, as a full or reset socket's does), and it tells the hub from
    inside the transport's write of the rest, as ``pause_writing`` does."""

    def __init__(self, hub: Hub, tool: str, room: int, last_takes: int | None = None) -> None:
        super().__init__()
        self.written: list[bytes] = []  # what the socket took, send by send
        self.rest: list[bytes] = []  # what the transport was left to buffer
        self._hub, self._tool, self._room, self._last_takes = hub, tool, room, last_takes
        self._clear = True

    @property
    def writer(self) -> Writer | None:  # type: ignore[override]
        return Writer(self._send, self._rest) if self._clear else None

    def _send(self, data: bytes) -> int:
        if len(self.written) < self._room:
            self.written.append(data)
            return len(data)
        if self._last_takes is None:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.written.append(data[: self._last_takes])
        return self._last_takes

    def _rest(self, data: bytes, taken: int) -> None:
        self.rest.append(data[taken:])
        self._clear = False
        self._hub.refresh(self._tool, self)

    def drained(self) -> None:
        self._room = len(self.written) + 1000
        self._clear = True
        self._hub.refresh(self._tool, self)


@pytest.mark.parametrize("last_takes", [10, 0, None], ids=["part", "nothing", "raises"])
async def test_a_subscriber_whose_socket_backs_up_gets_the_rest_then_batches_through_its_sink(
    make_broker: MakeBroker, last_takes: int | None
):
    broker = make_broker()
    await broker.start()
    hub = Hub(broker, history_size=1000)
    direct, queued = BackingUp(hub, "flask", room=2, last_takes=last_takes), Recorder()
    await join(hub, "flask", direct)
    await join(hub, "flask", queued)

    async def publish_one() -> None:
        await broker.publish(prepare(story(["flask"])), 1.0)
        count = len(queued.batches) + 1
        await async_wait_until(lambda: len(queued.batches) == count)

    for _ in range(4):
        await publish_one()
    # Two sends of the shared bytes; the third send takes part (or none) of its batch
    # and the transport is left the rest, in order; from the next batch on, the sink.
    third = queued.batches[2].ws_bytes
    assert direct.written[:2] == [b.ws_bytes for b in queued.batches[:2]]
    assert direct.written[0] is queued.batches[0].ws_bytes
    assert b"".join(direct.written[2:]) + b"".join(direct.rest) == third
    assert direct.rest and direct.rest[0] == third[last_takes or 0 :]
    assert direct.batches == queued.batches[3:]
    assert direct.closed is None
    direct.drained()
    await publish_one()
    assert direct.written[-1] is queued.batches[4].ws_bytes
    assert len(direct.batches) == 1
    await hub.close()


class BrokenWriter(Recorder):
    """A subscriber whose writer fails with a bug, not a socket error."""

    @property
    def writer(self) -> Writer | None:  # type: ignore[override]
        return Writer(self._send, self._rest)

    def _send(self, data: bytes) -> int:
        raise ValueError("a bug")

    def _rest(self, data: bytes, taken: int) -> None:
        raise AssertionError("not reached")


async def test_a_writer_that_fails_with_a_bug_closes_its_subscriber_and_no_other(
    make_broker: MakeBroker,
):
    broker = make_broker()
    await broker.start()
    hub = Hub(broker, history_size=1000)
    broken, fine = BrokenWriter(), BackingUp(hub, "flask", room=10)
    await join(hub, "flask", broken)
    await join(hub, "flask", fine)
    await broker.publish(prepare(story(["flask"])), 1.0)
    await async_wait_until(lambda: broken.closed is not None, what="the broken one to close")
    assert broken.closed == (1011, "internal error")
    assert len(fine.written) == 1 and fine.closed is None
    await hub.close()


async def started_redis_hub(url: str, prefix: str) -> tuple[RedisBroker, Hub]:
    """A started Redis broker on ``url``, and a hub over it."""
    broker = RedisBroker(url, prefix, 1000, 600)
    await broker.start()
    return broker, Hub(broker, history_size=1000)


async def test_a_history_read_failing_with_the_link_up_is_logged_and_retried(
    redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
):
    broker, hub = await started_redis_hub(redis_server.url, prefix)
    client = redis.Redis.from_url(redis_server.url)
    stream = Layout(prefix).stream("flask")
    await client.set(stream, "not a stream")  # e.g. another app's key under our prefix
    joining = asyncio.create_task(hub.join("flask", Recorder(), history=5))
    await async_wait_until(
        lambda: any("history of flask unreadable" in r.getMessage() for r in caplog.records),
        what="the failing read to be logged",
    )
    assert not joining.done()
    await client.delete(stream)
    assert (await asyncio.wait_for(joining, TIMEOUT)).events == []
    await client.aclose()
    await hub.close()
    await broker.close()


class RelayedHub(NamedTuple):
    """A hub whose broker reaches Redis through a relay, and a broker that publishes to
    the same Redis directly, as another process would."""

    relay: Relay
    broker: RedisBroker
    hub: Hub
    elsewhere: RedisBroker


@pytest.fixture
async def relayed_hub(redis_server: RedisServer, prefix: str) -> AsyncIterator[RelayedHub]:
    relay = await Relay.open(redis_server.port)
    broker, hub = await started_redis_hub(relay.url, prefix)
    elsewhere = RedisBroker(redis_server.url, prefix, 1000, 600)
    yield RelayedHub(relay, broker, hub, elsewhere)
    await hub.close()
    await broker.close()
    await elsewhere.close()
    await relay.close()


async def the_last_event(viewer: Recorder, elsewhere: RedisBroker) -> str:
    """Publish a last event from ``elsewhere``; its id, once ``viewer`` has it."""
    [[(_, last)]] = await elsewhere.publish(prepare(story(["flask"], "last")), 1.0)
    await async_wait_until(
        lambda: viewer.events and viewer.events[-1].id == last, what="the last event"
    )
    return last


async def test_the_first_subscriber_of_a_channel_whose_live_link_lags_its_history_misses_nothing(
    relayed_hub: RelayedHub, redis_server: RedisServer, prefix: str
):
    # A history-less join (as ?tools=flask) opens the channel in this process. One event
    # reaches the hub while it opens, and is buffered for the subscriber; the next four
    # are already in history when the hub reads where it stands, but still on their way
    # over the live link (a busy process reads its link late). The relay holds them
    # there, so the order is the test's, not the scheduler's.
    relay, _, hub, elsewhere = relayed_hub
    client = redis.Redis.from_url(redis_server.url)

    async def link_subscribed() -> bool:
        [(_, count)] = await client.pubsub_numsub(Layout(prefix).channel("flask"))
        return count == 1

    viewer = Recorder()
    relay.hold_link()
    joining = asyncio.create_task(join(hub, "flask", viewer))
    await async_wait_until(link_subscribed, what="Redis to subscribe the link")
    [[(_, first)]] = await elsewhere.publish(prepare(story(["flask"], "first")), 1.0)
    await async_wait_until(
        lambda: first.encode() in relay.link_held and relay.link_held.endswith(b"}\r\n"),
        what="the first event's message to reach the relay",
    )
    first_only = len(relay.link_held)  # the subscription's confirmation and the first event
    batch = prepare({"events": [story(["flask"], f"lagging {i}") for i in range(4)]})
    lagging = [pairs[0][1] for pairs in await elsewhere.publish(batch, 1.0)]
    relay.release_link(first_only)
    await joining
    relay.release_link()  # the lagging four now arrive live
    last = await the_last_event(viewer, elsewhere)
    assert [e.id for e in viewer.events] == [first, *lagging, last]
    await client.aclose()


async def test_a_link_that_drops_again_while_catching_up_loses_nothing(relayed_hub: RelayedHub):
    relay, broker, hub, elsewhere = relayed_hub
    await broker.history("flask", 1, (0, 0))  # loads the read-after script: one answer a read
    viewer = Recorder()
    await join(hub, "flask", viewer)
    [[(_, first)]] = await elsewhere.publish(prepare(story(["flask"], "first")), 1.0)
    await async_wait_until(lambda: [e.id for e in viewer.events] == [first])
    # The link drops and comes back; the hub's read of what it missed is in flight
    # (its answer held) when the link drops again.
    relay.hold_answers()
    relay.drop_link()
    await async_wait_until(lambda: relay.held_answers, what="the catch-up's read")
    relay.hold_link()  # the link's next confirmation waits: the outage goes on
    relay.drop_link()
    await async_wait_until(lambda: not broker.connected, what="the hub to hear of it")
    [[(_, during)]] = await elsewhere.publish(prepare(story(["flask"], "during")), 1.0)
    relay.release_answers()  # the first catch-up's read answers, from before "during"
    await broker.ping()  # a round trip after it, through the relay
    await async_wait_until(lambda: relay.link_held, what="the link to subscribe again")
    relay.release_link()  # the link is back
    last = await the_last_event(viewer, elsewhere)
    assert [e.id for e in viewer.events] == [first, during, last]


class Broken(Recorder):
    """A subscriber with a bug: taking a batch raises."""

    def sink(self, batch: Batch) -> None:
        raise RuntimeError("a bug in this subscriber's outbox")


async def test_a_sink_that_raises_is_closed_to_resume_and_stops_no_one_else(
    make_broker: MakeBroker, caplog: pytest.LogCaptureFixture
):
    broker = make_broker()
    await broker.start()
    hub = Hub(broker, history_size=1000)
    broken, after = Broken(), Recorder()
    await join(hub, "django", broken)
    await join(hub, "django", after)  # on the same channel, handed the batch after it
    flask = Recorder()
    await join(hub, "flask", flask)
    expected: dict[str, list[str]] = {"django": [], "flask": []}
    for _ in range(3):  # each batch is handed over in one pass: django's channel first
        published = await broker.publish(
            prepare({"events": [story(["django"]), story(["flask"])]}), 1.0
        )
        for [(tool, event_id)] in published:
            expected[tool].append(event_id)
        await async_wait_until(
            lambda: (
                [e.id for e in flask.events] == expected["flask"]
                and [e.id for e in after.events] == expected["django"]
            ),
            what="every other subscriber's events",
        )
    # The broken one is told to reconnect and resume from history (a hub cannot take
    # it off the channel: its session does that when the connection ends).
    assert broken.closed == (1011, "internal error")
    failures = [r for r in caplog.records if "on channel django failed" in r.getMessage()]
    assert failures and all(r.exc_info for r in failures)
    await hub.close()


async def test_a_catch_up_that_fails_closes_its_subscribers_and_the_channel_stays_live(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
):
    broker, hub = await started_redis_hub(own_redis.url, prefix)
    viewer = Recorder()
    await join(hub, "flask", viewer)
    [[(_, first)]] = await broker.publish(prepare(story(["flask"])), 1.0)
    await async_wait_until(lambda: [e.id for e in viewer.events] == [first])
    client = redis.Redis.from_url(own_redis.url)
    # Bytes that are no id where the newest trimmed id is kept (another writer under our
    # prefix): reading history after a cursor then fails with something else than
    # Unavailable. Then the live link drops, and the hub catches up from history.
    await client.set(Layout(prefix).trimmed("flask"), b"\xff")
    await client.client_kill_filter(_type="pubsub")
    await async_wait_until(lambda: viewer.closed is not None, what="the viewer to be closed")
    assert viewer.closed is not None and viewer.closed[0] == 1001  # it resumes from history
    failures = [r for r in caplog.records if "catching up channel flask failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info
    newcomer = Recorder()
    await join(hub, "flask", newcomer)
    [[(_, later)]] = await broker.publish(prepare(story(["flask"])), 1.0)
    await async_wait_until(
        lambda: [e.id for e in newcomer.events] == [later], what="live delivery after it"
    )
    await client.aclose()
    await hub.close()
    await broker.close()


def first_in_resubscribe() -> tuple[str, str]:
    """Two tool names (old, new) that the broker's re-subscribe, made from a set, lists
    new first (this process's string hashes decide: pick a pair for which they do)."""
    for m in range(20):
        for n in range(20):
            existing, candidate = f"old{m}", f"new{n}"
            held = set()
            held.add(existing)
            held.add(candidate)
            if next(iter(set(held))) == candidate:
                return existing, candidate
    raise AssertionError


async def test_a_channel_opened_during_an_outage_holds_so_a_second_drop_loses_nothing(
    relayed_hub: RelayedHub, prefix: str
):
    relay, broker, hub, elsewhere = relayed_hub
    layout = Layout(prefix)
    existing, tool = first_in_resubscribe()
    old = Recorder()
    await join(hub, existing, old)  # a channel subscribed before the outage
    # The link drops; a viewer of a new tool joins while it is down.
    viewer = Recorder()
    tasks: list[asyncio.Task[None]] = []
    heard = broker.on_connection

    def on_connection(connected: bool) -> None:
        heard(connected)
        if not connected and not tasks:  # right after the hub heard of the outage
            tasks.append(asyncio.create_task(join(hub, tool, viewer)))

    broker.on_connection = on_connection
    relay.hold_link()
    relay.drop_link()
    await async_wait_until(lambda: tasks, what="the outage to be heard")
    [joining] = tasks
    # The link is back and re-subscribes both; Redis confirms the new tool first. Only
    # that confirmation gets through: the hub opens the new channel (held None, as it
    # was made after the outage began) and the viewer goes live, while the link as a
    # whole is not up yet (django unconfirmed).
    channel = layout.channel(tool).encode()
    await async_wait_until(
        lambda: (
            channel in relay.link_held
            and b":1\r\n" in relay.link_held[relay.link_held.index(channel) :]
        ),
        what="the new tool's confirmation",
    )
    upto = relay.link_held.index(b":1\r\n", relay.link_held.index(channel)) + 4
    assert layout.channel(existing).encode() not in relay.link_held[:upto]
    relay.release_link(upto)
    await asyncio.wait_for(joining, 10)
    assert not broker.connected
    # An event of the new tool is published; the link drops again before it arrives.
    [[(_, lost)]] = await elsewhere.publish(prepare(story([tool], "second outage")), 1.0)
    await async_wait_until(lambda: lost.encode() in relay.link_held, what="it to be held")
    relay.drop_link()
    await async_wait_until(lambda: relay.link_held, what="the link to subscribe again")
    relay.release_link()
    await async_wait_until(lambda: broker.connected, what="the link to be up")
    [[(_, last)]] = await elsewhere.publish(prepare(story([tool], "last")), 1.0)
    await async_wait_until(lambda: viewer.events and viewer.events[-1].id == last)
    assert viewer.closed is None
    assert [e.id for e in viewer.events] == [lost, last]
