"""Publishes that arrive while one is in flight go to the broker together.

A site that publishes from many requests at once would otherwise make one broker
call per event: for the Redis broker one Lua script call, a round trip to Redis and
the script's run there. Here the first publish goes out at
once; the ones that come while it is in flight wait for it, then go out as one
batch. Each caller's own events stay all-or-nothing, because the joined batch is:
one script runs alone in Redis. A caller cancelled before its turn publishes
nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from livefeed.brokers.base import Broker, Published
from livefeed.errors import BrokerError, Unavailable
from livefeed.events import PreparedBatch


class PublishCoalescer:
    def __init__(self, broker: Broker, max_events: int) -> None:
        self._broker = broker
        self._max_events = max_events  # per broker call
        self._waiting: deque[tuple[PreparedBatch, asyncio.Future[Published]]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # nothing in flight, nothing waiting
        self._idle.set()

    async def publish(self, batch: PreparedBatch) -> Published:
        if not self._idle.is_set():
            future: asyncio.Future[Published] = asyncio.get_running_loop().create_future()
            self._waiting.append((batch, future))
            return await future
        self._idle.clear()  # alone: no future, no task, straight to the broker
        try:
            return await self._broker.publish(batch, time.time())
        except Unavailable as exc:
            self._fail_waiting(exc)
            raise
        finally:
            if self._waiting:
                self._drainer = asyncio.create_task(self._drain())
            else:
                self._idle.set()

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group = self._take_group()
                if group:
                    await self._send(group)
        finally:
            while self._waiting:  # only when cancelled: nothing was sent for them
                _, future = self._waiting.popleft()
                future.cancel()
            self._idle.set()

    def _fail_waiting(self, exc: Exception) -> None:
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    def _take_group(self) -> list[tuple[PreparedBatch, asyncio.Future[Published]]]:
        group: list[tuple[PreparedBatch, asyncio.Future[Published]]] = []
        size = 0
        while self._waiting:
            batch, future = self._waiting[0]
            if group and size + len(batch.events) > self._max_events:
                break
            self._waiting.popleft()
            if not future.cancelled():
                group.append((batch, future))
                size += len(batch.events)
        return group

    async def _send(self, group: list[tuple[PreparedBatch, asyncio.Future[Published]]]) -> None:
        joined = PreparedBatch(tuple(event for batch, _ in group for event in batch.events))
        try:
            published = await self._broker.publish(joined, time.time())
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:  # every caller of the group gets the broker's error
            if isinstance(exc, BrokerError) and len(group) > 1:
                # One caller's batch touches a key Redis refuses (nothing was stored):
                # send each on its own, so that only that caller hears of it.
                for one in group:
                    await self._send([one])
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, Unavailable):
                self._fail_waiting(exc)
            return
        start = 0
        for batch, future in group:
            end = start + len(batch.events)
            if not future.done():
                future.set_result(published[start:end])
            start = end

    async def close(self) -> None:
        """Wait until everything handed over has been published (or failed)."""
        await self._idle.wait()
