"""Redis key layout and the publish script's arguments: pure, shared by the async
broker and the synchronous :class:`~livefeed.Publisher`.

Keys (``P`` is the configured prefix, ``livefeed:`` by default):

=====================  ======  ====================================================
``P s:<channel>``      stream  history of a tool (or ``*``), trimmed to the size;
                               entry fields ``d`` (envelope tail), ``o`` (tool, on
                               ``*`` only). Stream ids are the event ids.
``P t:<channel>``      string  the newest id trimmed from that stream (for resume)
``P c:<channel>``      pubsub  live events: ``<id> <tool> <tail>``
``P idem:<key>``       string  ``tool id ...`` of an event, expires after 10 min
``P pres:<tool>``      hash    process id -> ``<count> <handle> ...`` (presence)
``P presx:<tool>``     zset    process id -> deadline (ms) of that entry
=====================  ======  ====================================================
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from livefeed.brokers.base import PresenceEntries, Published
from livefeed.envelope import envelope_tail
from livefeed.events import PreparedBatch

PUBLISH_LUA = resources.files("livefeed.brokers").joinpath("lua/publish.lua").read_text()
SINCE_LUA = resources.files("livefeed.brokers").joinpath("lua/since.lua").read_text()
PRESENCE_WRITE_LUA = (
    resources.files("livefeed.brokers").joinpath("lua/presence_write.lua").read_text()
)
PRESENCE_READ_LUA = (
    resources.files("livefeed.brokers").joinpath("lua/presence_read.lua").read_text()
)


class Layout:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._channel_prefix = f"{prefix}c:".encode()

    def stream(self, channel: str) -> str:
        return f"{self.prefix}s:{channel}"

    def trimmed(self, channel: str) -> str:
        return f"{self.prefix}t:{channel}"

    def channel(self, channel: str) -> str:
        return f"{self.prefix}c:{channel}"

    def channel_name(self, redis_channel: bytes) -> str | None:
        """The livefeed channel of a Redis pub/sub channel, or None if not ours."""
        if not redis_channel.startswith(self._channel_prefix):
            return None
        return redis_channel[len(self._channel_prefix) :].decode()


def publish_args(
    layout: Layout, history_size: int, ttl: int, batch: PreparedBatch, ts: float
) -> list[Any]:
    args: list[Any] = [layout.prefix, history_size, ttl, len(batch.events)]
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


def presence_args(
    prefix: str, process: str, entries: PresenceEntries, deadline_ms: int, ttl_ms: int
) -> list[Any]:
    args: list[Any] = [prefix, process, deadline_ms, ttl_ms]
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
