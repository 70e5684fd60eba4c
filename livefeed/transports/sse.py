"""``GET /sse``: Server-Sent Events, the same sessions as WebSocket in another framing.

Each event is ``event: <kind>``, ``id: <cursor>``, ``data: <envelope>``. The cursor
covers every channel of the stream (``flask:1764-0,*:1765-3``), so a browser's
``Last-Event-ID`` resumes all of them with no loss and no repeats. It advances on
events and, once each subscription is live, with an ``event: position`` message
(``{"type": "position", "tool", "id"}``), so that a tool with no event yet still
resumes from where the stream started. ``subscribed``, ``presence`` and ``error``
frames come as events of those names. A comment line goes out every ``sse_keepalive``
seconds (15), busy or quiet, as the contract asks ("at least every 15 s"), with an
``event: ping`` (``{"type": "ping", "interval": 15}``) in the same message: browsers
do not see comments, and a client needs something to tell a dead stream by.

A stream the server ends says why in a last ``event: close`` message,
``{"type": "close", "code": 4001, "reason": "token expired"}``, with the WebSocket
close code, so that a browser client treats both transports alike. The token and the
tools are checked as a WebSocket's ``?token=`` and subscribe are: an expired token is
that close at once, an invalid one an ``error`` event, a tool the token does not allow
an ``error`` event while the stream's other tools go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from livefeed import metrics, protocol
from livefeed.config import switch
from livefeed.envelope import Batch, Event
from livefeed.errors import InvalidRequest, LivefeedError
from livefeed.history import (
    MAX_CURSOR_ENTRIES,
    IdKey,
    decode_cursor,
    encode_cursor,
    format_id,
)
from livefeed.protocol import CloseCode
from livefeed.session import QueueingOutbox, Services, count_close
from livefeed.transports.api import error_response, request_token
from livefeed.transports.direct import ABORT_AFTER
from livefeed.types import decimal, is_channel, tool_list

log = logging.getLogger("livefeed.sse")

RETRY_MS = 2000  # the browser's reconnect delay, sent once at the start
RETRY = f"retry: {RETRY_MS}\n\n".encode()


def keepalive_message(interval: float) -> bytes:
    """The keepalive: the contract's comment line (for proxies), and in the same message
    an ``event: ping`` a browser can see (EventSource hides comments), so a client can
    tell a quiet stream from a dead one: nothing for two intervals means gone."""
    every: float | int = int(interval) if float(interval).is_integer() else interval
    ping = orjson.dumps({"type": "ping", "interval": every})
    return b": keepalive\nevent: ping\ndata: " + ping + b"\n\n"


HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "close"}
# The HTTP connection's transport, in the scope under `livefeed serve` (server.py).
TRANSPORT_EXTENSION = "livefeed.transport"
_FORWARDED = {"error", "presence", "subscribed"}  # control frames SSE clients get as named events


class SseOutbox(QueueingOutbox):
    """A bounded queue of SSE messages, drained by the response body."""

    def __init__(
        self,
        max_frames: int,
        max_bytes: int,
        cursor: dict[str, str],
        keepalive: float,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self._keepalive = keepalive  # seconds between comment lines (proxies cut idle streams)
        self._keepalive_message = keepalive_message(keepalive)
        self._on_close = on_close
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._positions = dict(cursor)  # channel -> last id the client holds
        self._queue: deque[bytes] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _push(self, chunk: bytes) -> None:
        if self._closed:
            return
        self._queue.append(chunk)
        self._bytes += len(chunk)
        if len(self._queue) >= self._max_frames or self._bytes >= self._max_bytes:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
            return
        self._wake.set()

    def _cursor(self) -> bytes:
        return encode_cursor(self._positions).encode()

    def send_event(self, event: Event) -> None:
        self._positions[event.channel] = event.id
        self._push(
            b"event: "
            + event.kind.encode()
            + b"\nid: "
            + self._cursor()
            + b"\ndata: "
            + event.payload
            + b"\n\n"
        )

    def send_batch(self, batch: Batch) -> None:
        for event in batch.events:
            self.send_event(event)

    def send_frame(self, frame: bytes, kind: str) -> None:
        if kind in _FORWARDED:
            self._push(b"event: " + kind.encode() + b"\ndata: " + frame + b"\n\n")

    def position(self, channel: str, key: IdKey) -> None:
        self._positions[channel] = format_id(key)
        data = protocol.position(channel, self._positions[channel])
        self._push(b"event: position\nid: " + self._cursor() + b"\ndata: " + data + b"\n\n")

    def close(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            count_close(code)
            self._queue.clear()  # what was queued is dropped; the last message says why
            self._queue.append(close_message(code, reason))
            self._bytes = 0
            self._wake.set()
            self._drained.set()
            self._on_close()

    async def drain(self, frames: int, size: int) -> None:
        while (len(self._queue) >= frames or self._bytes >= size) and not self._closed:
            self._drained.clear()
            await self._drained.wait()

    async def chunks(self) -> AsyncIterator[bytes]:
        yield RETRY
        loop = asyncio.get_running_loop()
        # On a clock of its own, not after a silence: a stream busy with events still gets
        # a comment line at least this often (CONTRACT.md: "at least every 15 s").
        comment_due = loop.time() + self._keepalive
        while self._queue or not self._closed:
            if not self._queue:
                self._drained.set()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), comment_due - loop.time())
            comment = b""
            now = loop.time()
            if now >= comment_due:
                comment = self._keepalive_message
                # On schedule, not from now, so late wake-ups do not add up (unless
                # a whole period was missed).
                comment_due += self._keepalive
                if comment_due <= now:
                    comment_due = now + self._keepalive
            if self._queue:
                # What piled up (and a comment due) goes out in one write.
                batch = b"".join((comment, *self._queue))
                self._queue.clear()
                self._bytes = 0
                # Taken: a replay waiting in drain() may go on, even if live events
                # refill the queue before it is empty again at the top of this loop.
                self._drained.set()
                yield batch
            elif comment:
                yield comment


def _subscribe_frame(request: Request, max_subscriptions: int) -> protocol.Subscribe:
    """The subscribe an SSE URL stands for; raises InvalidRequest (400) when malformed."""
    params = request.query_params
    tools = tool_list(params.get("tools", ""))
    if not tools:
        raise InvalidRequest("invalid_query", "tools: name at least one tool", "tools")
    bad = [tool for tool in tools if not is_channel(tool)]
    if bad:
        raise InvalidRequest("invalid_tool", f"not a tool name: {bad[0][:70]!r}", "tools")
    if len(tools) > max_subscriptions:
        raise InvalidRequest(
            "too_many_subscriptions", f"at most {max_subscriptions} tools per stream", "tools"
        )
    history = decimal(params.get("history", "0"), protocol.MAX_HISTORY)
    if history is None:
        raise InvalidRequest(
            "invalid_query", f"history: expected 0 to {protocol.MAX_HISTORY}", "history"
        )
    try:
        presence = switch(params.get("presence", "0"))
    except ValueError:
        raise InvalidRequest("invalid_query", "presence: expected 1 or 0", "presence") from None
    # A stream's own cursor names each of its tools: as many as a stream may have.
    cursor = _cursor(request, max(MAX_CURSOR_ENTRIES, max_subscriptions))
    since = {channel: event_id for channel, event_id in cursor.items() if channel in tools}
    return protocol.Subscribe(tools, history, since, presence)


def _cursor(request: Request, max_entries: int) -> dict[str, str]:
    """The resume cursor from ``Last-Event-ID`` (or ``?last_event_id=``). A malformed one
    is ignored rather than refused: an error status would stop EventSource for good."""
    text = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if not text:
        return {}
    try:
        return decode_cursor(text, max_entries)
    except ValueError:
        log.info("ignored a malformed Last-Event-ID: %.100r", text)
        return {}


async def serve_sse(request: Request, services: Services) -> Response:
    settings = services.settings
    try:
        frame = _subscribe_frame(request, settings.max_subscriptions)
    except LivefeedError as exc:
        return error_response(exc)
    # A stream the server ends sends its close message; a client that no longer reads
    # would hold the response, and so the session, for as long as it keeps the socket.
    # Cut it if it has not taken the end in time. (The response says `Connection: close`,
    # so the socket never carries another request that the cut could hit.)
    transport = request.scope.get("extensions", {}).get(TRANSPORT_EXTENSION)

    def on_close() -> None:
        if transport is not None:
            asyncio.get_running_loop().call_later(ABORT_AFTER, transport.abort)

    outbox = SseOutbox(
        settings.outbox_frames,
        settings.outbox_bytes,
        frame.since,
        settings.sse_keepalive,
        on_close,
    )
    session = services.session(outbox, "sse", None)
    services.sessions.add(session)
    connections = metrics.CONNECTIONS.labels(transport="sse")
    connections.inc()

    async def body() -> AsyncIterator[bytes]:
        # Token and tools answered in the stream, not with a status: EventSource shows a
        # page no status, and would stop every tool of the stream for one private tool.
        starting = session.start(None, request_token(request), frame)
        subscribing = asyncio.create_task(starting, name=f"sse {session.id}")
        try:
            async for chunk in outbox.chunks():
                yield chunk
        finally:
            subscribing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await subscribing
            session.end()
            services.sessions.discard(session)
            connections.dec()

    return StreamingResponse(body(), media_type="text/event-stream", headers=HEADERS)


def close_message(code: int, reason: str) -> bytes:
    """The last message of a stream the server ends, with the WebSocket close code."""
    data = orjson.dumps({"type": "close", "code": code, "reason": reason})
    return b"event: close\ndata: " + data + b"\n\n"


def ended_stream(code: int, reason: str) -> Response:
    """A stream that ends as soon as it starts, saying why: for a request the server
    will not serve now (shutting down). A status other than 200 would stop a browser's
    EventSource for good; a stream that ends makes it reconnect after ``retry``."""
    body = RETRY + close_message(code, reason)
    count_close(code)
    return Response(body, media_type="text/event-stream", headers=HEADERS)
