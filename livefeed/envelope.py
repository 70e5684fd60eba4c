"""The envelope every subscriber receives, assembled once per event per process.

    {"type":"event","tool":T,"id":ID[,"channel":"*"],"kind":K,"ts":TS,"data":{...}}

The broker stores and publishes the *tail* (``,"kind":...}``), which never changes,
and the id it assigned. A process builds the envelope from those bytes without
decoding the data, then hands the same :class:`Event` (and the same frame bytes) to
every local subscriber. ``channel`` is present only on the firehose, whose ids are
its own; a client keys its resume cursor by ``channel``, else ``tool``.
"""

from __future__ import annotations

import orjson

from livefeed.history import parse_id
from livefeed.protocol import ws_text_frame
from livefeed.types import FIREHOSE, EventId, ToolSlug


def envelope_tail(kind: str, ts: float, data: bytes) -> bytes:
    """Everything after the id: stored with the event and sent as is."""
    return b',"kind":"' + kind.encode() + b'","ts":' + orjson.dumps(ts) + b',"data":' + data + b"}"


def envelope(tool: ToolSlug, event_id: EventId, tail: bytes, channel: str) -> bytes:
    """The envelope of one event of ``tool`` as delivered on ``channel`` (a tool or ``*``)."""
    head = b'{"type":"event","tool":"' + tool.encode() + b'","id":"' + event_id.encode() + b'"'
    if channel == FIREHOSE:
        head += b',"channel":"*"'
    return head + tail


_STORY_TAIL = b',"kind":"story"'


class Event:
    """One event on one channel, shared read-only by every local subscriber.

    Encoded forms are computed at most once, on first use.
    """

    __slots__ = ("_text", "_ws_frame", "channel", "id", "key", "kind", "payload", "tool")

    def __init__(self, channel: str, tool: ToolSlug, event_id: EventId, tail: bytes) -> None:
        key = parse_id(event_id)
        if key is None:
            raise ValueError(f"not an event id: {event_id!r}")
        self.channel = channel  # the subscription it travels on: its tool, or "*"
        self.tool = tool
        self.id = event_id
        self.key = key  # (ms, seq): ids compare numerically, never as strings
        self.kind = "story" if tail.startswith(_STORY_TAIL) else "activity"
        self.payload = envelope(tool, event_id, tail, channel)
        self._text: str | None = None
        self._ws_frame: bytes | None = None

    @property
    def ts(self) -> float:
        """The accept time in the envelope (read on demand, for the latency metric)."""
        start = self.payload.index(b'"ts":') + 5
        return float(self.payload[start : self.payload.index(b",", start)])

    @property
    def ws_frame(self) -> bytes:
        """The envelope as a complete WebSocket text frame (encoded once)."""
        if self._ws_frame is None:
            self._ws_frame = ws_text_frame(self.payload)
        return self._ws_frame

    @property
    def text(self) -> str:
        """The envelope as ``str``, for ASGI ``websocket.send`` (decoded once)."""
        if self._text is None:
            self._text = self.payload.decode()
        return self._text

    def __repr__(self) -> str:
        return f"Event({self.channel!r}, {self.tool!r}, {self.id!r})"


class Batch:
    """The events of one channel fanned out in one pass of the event loop, in order,
    shared by every subscriber of that channel. A burst becomes one write per
    WebSocket connection: the frames are joined once, for all of them."""

    __slots__ = ("events", "ws_bytes")

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        # Every event's WebSocket frame, back to back. Built here rather than on first
        # use: an attribute read instead of a property call for each subscriber (2-10 %
        # of the fan-out's CPU), for one frame per event (a header and a copy of the
        # envelope) built even when only SSE subscribers are listening.
        self.ws_bytes = (
            events[0].ws_frame if len(events) == 1 else b"".join(e.ws_frame for e in events)
        )

    def __len__(self) -> int:
        return len(self.events)
