"""Presence over a real store: shared reads, flushes racing joins and leaves, the cache.

These drive one :class:`Presence` step by step (a read, a flush, one heartbeat push),
as the sessions, the HTTP API and ``Presence._run`` call them, so that a race can be
placed exactly; tests/integration/test_presence.py covers whole servers.
"""

from __future__ import annotations

import asyncio

import pytest

from livefeed.brokers.base import PresenceEntries, PresenceStore
from livefeed.brokers.redis import RedisBroker
from livefeed.errors import Unavailable
from livefeed.presence import FRESH_FOR, Presence
from tests.backends.conftest import MakeBroker
from tests.support.redis_server import RedisServer
from tests.support.timing import async_wait_until


def store(make_broker: MakeBroker) -> PresenceStore:
    broker = make_broker()
    assert isinstance(broker, PresenceStore)
    return broker


class Frames:
    """A watcher, as a session asking for ``presence`` frames is."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def presence_frame(self, tool: str, frame: bytes) -> None:
        self.frames.append(frame)


async def redis_broker(redis: RedisServer, prefix: str) -> RedisBroker:
    broker = RedisBroker(redis.url, prefix)
    await broker.start()
    return broker


async def test_a_reader_cancelled_mid_read_does_not_fail_the_others_sharing_it(
    redis_server: RedisServer, prefix: str
):
    """One store read per tool is shared by every caller; the caller that started it
    may be cancelled (its WebSocket closed during subscribe). Only that caller may see
    CancelledError: another connection's subscribe, an HTTP read and the heartbeat
    waiting for the same read still get the count. (Redis only: the memory store's
    read never suspends, so no one can share it.)"""
    broker = await redis_broker(redis_server, prefix)
    presence = Presence(broker)
    watcher = Frames()
    try:
        presence.join("flask", None)
        presence.watch("flask", watcher)
        starter = asyncio.create_task(presence.state("flask"))  # a session's subscribe
        await asyncio.sleep(0)  # one loop turn: its read is started and in flight
        sharers = [
            asyncio.create_task(presence.state("flask")),  # another session's subscribe
            asyncio.create_task(presence.states(["flask"])),  # GET /api/presence
            asyncio.create_task(presence._push()),  # one heartbeat step of Presence._run
        ]
        await asyncio.sleep(0)  # one loop turn: they wait for the starter's read
        starter.cancel()  # the first client went away
        results = await asyncio.gather(*sharers, return_exceptions=True)
        assert results == [(1, []), {"flask": (1, [])}, None]
        assert watcher.frames == [b'{"type":"presence","tool":"flask","count":1,"users":[]}']
        with pytest.raises(asyncio.CancelledError):
            await starter
    finally:
        await broker.close()


async def test_the_heartbeat_outlives_a_cancellation_that_is_not_its_own(
    make_broker: MakeBroker, monkeypatch: pytest.MonkeyPatch
):
    """A CancelledError can reach the heartbeat without anyone cancelling it (it did
    through a shared read, above). Presence._run caught only Exception, so that ended
    presence in the process for good: no more flushes, renewals or frames."""
    presence_store = store(make_broker)
    real_read = presence_store.read
    strays = [asyncio.CancelledError("stray")]

    async def read_once_cancelled(tools: list[str]) -> dict[str, PresenceEntries]:
        if strays:
            raise strays.pop()
        return await real_read(tools)

    monkeypatch.setattr(presence_store, "read", read_once_cancelled)
    presence = Presence(presence_store)
    watcher = Frames()
    presence.join("flask", "laura_garcia")
    presence.watch("flask", watcher)
    await presence.start()
    try:
        await async_wait_until(
            lambda: watcher.frames and not strays, what="a presence frame after the stray"
        )
    finally:
        await presence.close()
    assert presence._task is not None and presence._task.cancelled()  # close() still ends it


async def test_a_leave_during_a_flush_reaches_other_processes(
    redis_server: RedisServer, prefix: str
):
    """The heartbeat writes the tools whose tally changed. A leave (or join) made while
    that write is at Redis was dropped from the changed set when the write ended, so
    other processes saw the viewer until the next full renewal, ~5 s later (contract:
    a change is visible everywhere within 2 s)."""
    here_broker = await redis_broker(redis_server, prefix)
    there_broker = await redis_broker(redis_server, prefix)
    here = Presence(here_broker)

    async def seen_there() -> tuple[int, list[str]]:
        return await Presence(there_broker).state("flask")  # a new one: nothing cached

    try:
        here.join("flask", "laura_garcia")
        flushing = asyncio.create_task(here._flush(renew=False))
        await asyncio.sleep(0)  # one loop turn: the flush's write is at Redis...
        here.leave("flask", "laura_garcia")  # ...when the viewer leaves
        await flushing
        assert await seen_there() == (1, ["laura_garcia"])
        await here._flush(renew=False)  # the next heartbeat, not a renewal
        assert await seen_there() == (0, [])
    finally:
        await here_broker.close()
        await there_broker.close()


async def test_a_flush_that_failed_is_written_by_the_next_one(own_redis: RedisServer, prefix: str):
    """A flush that Redis refused keeps its tools to write, so the change is not lost."""
    here_broker = await redis_broker(own_redis, prefix)
    there_broker = await redis_broker(own_redis, prefix)
    here, there = Presence(here_broker), Presence(there_broker)
    try:
        here.join("flask", None)
        own_redis.stop()
        with pytest.raises(Unavailable):
            await here._flush(renew=False)
        own_redis.start()
        await here._flush(renew=False)
        assert await there.state("flask") == (1, [])
    finally:
        await here_broker.close()
        await there_broker.close()


async def test_tools_read_once_are_forgotten_once_their_read_is_stale(
    make_broker: MakeBroker,
):
    """GET /api/presence reads up to 100 tool names a request, unauthenticated. Each
    read was cached for good: every name anyone ever asked about stayed in memory.
    A cached read older than FRESH_FOR is never served (it is re-read), so it goes."""
    now = 1000.0
    presence = Presence(store(make_broker), clock=lambda: now)
    for batch in range(50):
        await presence.states([f"asked-{batch}-{i}" for i in range(100)])
    assert len(presence._others) == 5000  # fresh reads are kept, for FRESH_FOR
    now += FRESH_FOR + 0.1
    assert await presence.states(["flask"]) == {"flask": (0, [])}
    assert list(presence._others) == ["flask"]
