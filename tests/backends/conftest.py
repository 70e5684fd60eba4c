"""The behavioural suite runs every test against every broker (habit 5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from livefeed.brokers.base import Broker
from livefeed.brokers.memory import MemoryBroker
from livefeed.brokers.redis import RedisBroker
from livefeed.envelope import Event
from tests.support.redis_server import RedisServer
from tests.support.timing import TIMEOUT

MakeBroker = Callable[..., Broker]


@pytest.fixture(params=["memory", "redis"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_broker(
    broker_kind: str, request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[MakeBroker]:
    made: list[Broker] = []

    def make(history_size: int = 1000, idempotency_ttl: int = 600) -> Broker:
        broker: Broker
        if broker_kind == "memory":
            broker = MemoryBroker(history_size, idempotency_ttl)
        else:
            redis: RedisServer = request.getfixturevalue("redis_server")
            broker = RedisBroker(redis.url, prefix, history_size, idempotency_ttl)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.close()


class Collector:
    """Records live events a broker (or hub) hands over, and waits for them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._arrived = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    async def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[Event]:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events
