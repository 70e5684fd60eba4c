"""Redis key layout and the publish script's arguments: pure, shared by the async
broker and the synchronous :class:`~livefeed.Publisher`.

Keys (``P`` is the configured prefix, ``livefeed:`` by default):

=====================  ======  ====================================================
``P s:<channel>``      stream  history of a tool (or ``*``), trimmed to the size;
                               entry fields ``d`` (envelope tail), ``o`` (tool, on
                               ``*`` only). Stream ids are the event ids.
``P t:<channel>``      string  the newest id trimmed from that stream (for resume)
``P c:<channel>``      pubsub  live events: ``<id> <tool> <tail>`` (``P db<n>:c:<channel>``
                               for database n > 0: pub/sub ignores databases)
``P idem:<key>``       string  ``tool id ...`` of an event, expires after 10 min
``P op:<operation>``   string  one publish call's answer (per event ``tool id ...``,
                               newline-joined), or ``""`` once settled unstored;
                               expires after ``OPERATION_TTL`` (see below)
``P pres:<tool>``      hash    process id -> ``<count> <handle> ...`` (presence)
``P presx:<tool>``     zset    process id -> deadline (ms) of that entry
=====================  ======  ====================================================

Each publish call is an *operation* with an id of its own. When its reply is lost (a
timeout, or the connection dropped after the script was sent), the publisher runs
``settle.lua``: it returns the operation's stored answer, or fences the operation
(a late run of the script then does nothing) and says it was not stored.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
from importlib import resources
from typing import Any

from livefeed.brokers.base import PresenceEntries, Published
from livefeed.envelope import envelope_tail
from livefeed.errors import BrokerError, LivefeedError, OutcomeUnknown, Unavailable
from livefeed.events import PreparedBatch

log = logging.getLogger("livefeed.broker")

PUBLISH_LUA = resources.files("livefeed.brokers").joinpath("lua/publish.lua").read_text()
SETTLE_LUA = resources.files("livefeed.brokers").joinpath("lua/settle.lua").read_text()
SINCE_LUA = resources.files("livefeed.brokers").joinpath("lua/since.lua").read_text()
PRESENCE_WRITE_LUA = (
    resources.files("livefeed.brokers").joinpath("lua/presence_write.lua").read_text()
)
PRESENCE_READ_LUA = (
    resources.files("livefeed.brokers").joinpath("lua/presence_read.lua").read_text()
)

OPERATION_TTL = 120  # seconds an operation's answer (or fence) is kept: longer than any settle
SETTLE_WITHIN = 10.0  # seconds a publisher keeps trying to learn a lost reply's outcome


class Layout:
    def __init__(self, prefix: str, db: int = 0) -> None:
        self.prefix = prefix
        # Keys live in the URL's database, but pub/sub channels are server-wide: a
        # deployment on another database needs channels of its own (db 0 keeps the
        # names it always had).
        self.live_prefix = f"{prefix}c:" if db == 0 else f"{prefix}db{db}:c:"
        self._channel_prefix = self.live_prefix.encode()

    def stream(self, channel: str) -> str:
        return f"{self.prefix}s:{channel}"

    def trimmed(self, channel: str) -> str:
        return f"{self.prefix}t:{channel}"

    def channel(self, channel: str) -> str:
        return f"{self.live_prefix}{channel}"

    def operation(self, operation: str) -> str:
        return f"{self.prefix}op:{operation}"

    def channel_name(self, redis_channel: bytes) -> str | None:
        """The livefeed channel of a Redis pub/sub channel, or None if not ours."""
        if not redis_channel.startswith(self._channel_prefix):
            return None
        return redis_channel[len(self._channel_prefix) :].decode()


def database_of(pool: Any) -> int:
    """The database number a redis-py connection pool (sync or async) selects."""
    return int(pool.connection_kwargs.get("db") or 0)


class _Operations:
    """Operation ids: a random per-process base and a counter. Unique among every
    process publishing to one Redis for the 2 minutes an id is kept (96 random bits
    each), without uuid4's system call and object per publish; a forked child draws a
    base of its own."""

    def __init__(self) -> None:
        self.seed()
        os.register_at_fork(after_in_child=self.seed)

    def seed(self) -> None:
        self.base = secrets.token_hex(12)
        self.counter = itertools.count()

    def new(self) -> str:
        return f"{self.base}{next(self.counter):x}"


new_operation = _Operations().new


def publish_args(
    layout: Layout, history_size: int, ttl: int, batch: PreparedBatch, ts: float, operation: str
) -> list[Any]:
    args: list[Any] = [
        layout.prefix,
        layout.live_prefix,
        history_size,
        ttl,
        operation,
        OPERATION_TTL,
        len(batch.events),
    ]
    for event in batch.events:
        tail = envelope_tail(event.kind, ts, event.data)
        args += [event.idempotency_key or "", tail, len(event.tools), *event.tools]
    return args


def parse_published(result: list[bytes]) -> Published:
    published: Published = []
    for joined in result:
        words = joined.decode().split(" ")
        published.append(list(zip(words[::2], words[1::2], strict=True)))
    return published


def parse_settled(stored: bytes) -> Published | None:
    """settle.lua's answer: what the operation stored, or None if it stored nothing."""
    return parse_published(stored.split(b"\n")) if stored else None


def refusal(exc: Exception) -> LivefeedError:
    """The error for a publish Redis answered with an error reply: it wrote nothing
    (the script checks every key's type, and that the Redis user may run every write,
    before its first write; any other error reply is Redis refusing to run it: out of
    memory, a read-only replica, ...)."""
    message = str(exc)
    for refused in ("LIVEFEED_KEYTYPE ", "LIVEFEED_NOPERM "):
        if message.startswith(refused):
            return BrokerError(message.removeprefix(refused))
    return Unavailable(f"Redis refused the publish: {message}")


class Settling:
    """Settling one publish whose reply was lost: the settle script's arguments, its
    verdicts, and the waits between attempts. The same for the async broker and the
    sync store, which only differ in how they call Redis and sleep."""

    def __init__(
        self, layout: Layout, operation: str, lost: Exception, within: float, now: float
    ) -> None:
        log.warning("a publish's reply was lost (%s); settling it", _said(lost))
        self.args: list[str | int] = [layout.operation(operation), OPERATION_TTL]
        self._lost = lost
        self._within = within
        self._deadline = now + within
        self._delay = 0.05

    def verdict(self, stored: bytes) -> Published:
        """What the operation stored; raises Unavailable when Redis confirmed it stored
        nothing (and, fenced, never will)."""
        published = parse_settled(stored)
        if published is None:
            raise Unavailable(
                f"the publish's reply was lost ({_said(self._lost)}); Redis confirmed that "
                "nothing of it was stored, and now never will be"
            )
        return published

    def wait_after(self, failed: Exception, now: float) -> float:
        """Seconds to wait before asking again; raises OutcomeUnknown past the deadline."""
        delay, self._delay = self._delay, min(2 * self._delay, 0.5)
        if now + delay > self._deadline:
            raise OutcomeUnknown(
                f"the publish's reply was lost ({_said(self._lost)}) and Redis could not say "
                f"within {self._within:g} s whether it was stored ({_said(failed)}): it may "
                "have been stored and delivered, so a retry may deliver it twice unless "
                "every event carries an idempotency_key"
            )
        return delay


def _said(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def presence_args(
    prefix: str, process: str, entries: PresenceEntries, lifetime_ms: int
) -> list[Any]:
    """The arguments of presence_write.lua: entries that live ``lifetime_ms`` on Redis's
    clock, in keys that outlive them by as much again."""
    args: list[Any] = [prefix, process, lifetime_ms, 2 * lifetime_ms]
    for tool, (count, handles) in entries.items():
        args += [tool, " ".join((str(count), *handles)) if count > 0 else ""]
    return args


def parse_presence(tools: list[str], reply: list[list[bytes]]) -> dict[str, PresenceEntries]:
    merged: dict[str, PresenceEntries] = {}
    for tool, flat in zip(tools, reply, strict=True):
        entries: PresenceEntries = {}
        for process, entry in zip(flat[::2], flat[1::2], strict=True):
            count, *handles = entry.decode().split(" ")
            entries[process.decode()] = (int(count), tuple(handles))
        merged[tool] = entries
    return merged
