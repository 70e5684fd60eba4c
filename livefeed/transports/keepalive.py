"""WebSocket keepalive for every connection of a process, from one timer.

uvicorn gives each connection a ping timer, a pong deadline timer and a fresh random
ping payload: two or three timer handles and a frame built per ping, per connection.
With 5,000 connections on a 25 s heartbeat that was 12 % of the server's CPU in the
many-channels benchmark (16.0-16.3 µs per delivery against 14.0-14.3 with pings off).

Here each connection sits in one of ``slots`` buckets, picked at random so that
connections opened together (a deploy, a reconnect wave) are not pinged together
forever after (such a burst of pings in front of the events had doubled the p99 at
20,000 deliveries/s), and one timer visits a bucket per tick. A visited connection
whose last ping was answered gets the same pre-encoded ping frame; one whose ping has
gone unanswered for ``timeout`` is dropped. Any pong answers: a client that sends
unsolicited pongs is alive too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from typing import Protocol

log = logging.getLogger("livefeed.ws")

PING_FRAME = b"\x89\x00"  # a ping with no payload; server frames are never masked


class Pinged(Protocol):
    """A connection the keepalive looks after (``DirectWebSocketProtocol``)."""

    # Visits since the ping in flight was sent; None when nothing is in flight.
    ping_missed: int | None
    keepalive_bucket: set[Pinged] | None

    def send_keepalive_ping(self) -> None: ...

    def keepalive_timeout(self) -> None: ...


class Keepalive:
    """``timeout`` is rounded up to whole intervals (a connection is only looked at
    once per interval); None never drops a connection, as with uvicorn."""

    def __init__(self, interval: float, timeout: float | None, tick: float = 1.0) -> None:
        self._slots = max(1, round(interval / tick))
        self._tick = interval / self._slots  # each connection is visited every `interval`
        # Visits a ping may stay unanswered: 2 for a timeout of two intervals.
        self._patience = (
            math.inf if timeout is None else max(1, math.ceil(timeout / interval - 1e-9))
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buckets: list[set[Pinged]] = []
        self._next = 0
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def add(self, connection: Pinged) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a server run again on a new loop starts afresh
            self._loop, self._buckets = loop, [set() for _ in range(self._slots)]
            self._next, self._count, self._timer = 0, 0, None
        bucket = self._buckets[random.randrange(self._slots)]
        bucket.add(connection)
        connection.keepalive_bucket = bucket
        connection.ping_missed = None
        self._count += 1
        if self._timer is None:
            self._due = loop.time() + self._tick
            self._timer = loop.call_at(self._due, self._visit)

    def _look_after(self, connection: Pinged) -> None:
        missed = connection.ping_missed
        if missed is None:
            connection.ping_missed = 0
            connection.send_keepalive_ping()
        elif missed + 1 >= self._patience:
            connection.keepalive_timeout()
        else:
            connection.ping_missed = missed + 1

    def remove(self, connection: Pinged) -> None:
        bucket = connection.keepalive_bucket
        if bucket is None:
            return
        connection.keepalive_bucket = None
        bucket.discard(connection)
        if not any(ours is bucket for ours in self._buckets):
            return  # added on a loop that has since been replaced
        self._count -= 1
        if not self._count and self._timer is not None:
            self._timer.cancel()  # an idle process does not wake up for nothing
            self._timer = None

    def _visit(self) -> None:
        bucket = self._buckets[self._next]
        self._next = (self._next + 1) % self._slots
        for connection in tuple(bucket):  # a timeout removes the connection from its bucket
            try:
                self._look_after(connection)
            except Exception:  # one connection's fault must not stop everyone's pings
                log.exception("keepalive failed for one connection")
        if not self._count:
            self._timer = None
            return
        loop = asyncio.get_running_loop()
        # On an absolute schedule; after a stall, carry on from now rather than catch up.
        self._due = max(self._due + self._tick, loop.time())
        self._timer = loop.call_at(self._due, self._visit)
