"""The presence store promises, on every broker: entries merge per process and expire."""

from __future__ import annotations

import time

import pytest

from livefeed.brokers.base import PresenceStore
from livefeed.brokers.redis import RedisBroker
from tests.backends.conftest import MakeBroker
from tests.support.redis_server import RedisServer
from tests.support.timing import async_wait_until


def store(make_broker: MakeBroker) -> PresenceStore:
    broker = make_broker()
    assert isinstance(broker, PresenceStore)
    return broker


async def test_entries_of_several_processes_are_read_together(make_broker: MakeBroker):
    presence = store(make_broker)
    await presence.write("p1", {"flask": (2, ("laura_garcia",)), "django": (1, ())}, ttl=30)
    await presence.write("p2", {"flask": (3, ("klodnitsky", "laura_garcia"))}, ttl=30)
    read = await presence.read(["flask", "django", "nobody"])
    assert read == {
        "flask": {"p1": (2, ("laura_garcia",)), "p2": (3, ("klodnitsky", "laura_garcia"))},
        "django": {"p1": (1, ())},
        "nobody": {},
    }


async def test_a_count_of_zero_removes_the_entry(make_broker: MakeBroker):
    presence = store(make_broker)
    await presence.write("p1", {"flask": (2, ())}, ttl=30)
    await presence.write("p1", {"flask": (0, ())}, ttl=30)
    assert await presence.read(["flask"]) == {"flask": {}}


async def test_a_rewrite_replaces_the_processs_entry(make_broker: MakeBroker):
    presence = store(make_broker)
    await presence.write("p1", {"flask": (2, ("a",))}, ttl=30)
    await presence.write("p1", {"flask": (5, ("b",))}, ttl=30)
    assert await presence.read(["flask"]) == {"flask": {"p1": (5, ("b",))}}


async def test_an_entry_that_is_not_renewed_expires(make_broker: MakeBroker):
    presence = store(make_broker)
    await presence.write("dead", {"flask": (4, ())}, ttl=0.3)
    await presence.write("alive", {"flask": (1, ())}, ttl=30)

    async def only_the_living() -> bool:
        return await presence.read(["flask"]) == {"flask": {"alive": (1, ())}}

    await async_wait_until(only_the_living, what="the unrenewed entry to expire")


async def test_redis_keeps_deadlines_on_its_own_clock_not_each_hosts(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
):
    """Processes on hosts whose clocks disagree by more than an entry's life: a reader
    ahead must not purge live entries, a reader behind must not keep dead ones."""
    writer = RedisBroker(redis_server.url, prefix, 1000, 600)
    reader = RedisBroker(redis_server.url, prefix, 1000, 600)
    host_time = time.time
    try:
        await writer.write("alive", {"flask": (1, ())}, ttl=30)
        monkeypatch.setattr(time, "time", lambda: host_time() + 60)
        assert await reader.read(["flask"]) == {"flask": {"alive": (1, ())}}

        monkeypatch.setattr(time, "time", host_time)
        await writer.write("dying", {"flask": (4, ())}, ttl=0.3)
        # Written last, so the tool's keys outlive the test (each write sets their TTL).
        await writer.write("alive", {"flask": (1, ())}, ttl=30)
        monkeypatch.setattr(time, "time", lambda: host_time() - 60)

        async def only_the_living() -> bool:
            return await reader.read(["flask"]) == {"flask": {"alive": (1, ())}}

        await async_wait_until(only_the_living, what="the dead entry to expire on Redis's clock")
    finally:
        await writer.close()
        await reader.close()
