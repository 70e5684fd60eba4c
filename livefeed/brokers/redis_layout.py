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
=====================  ======  ====================================================
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from livefeed.brokers.base import Published
from livefeed.envelope import envelope_tail
from livefeed.events import PreparedBatch

PUBLISH_LUA = resources.files("livefeed.brokers").joinpath("lua/publish.lua").read_text()
SINCE_LUA = resources.files("livefeed.brokers").joinpath("lua/since.lua").read_text()


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
