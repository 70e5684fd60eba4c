"""``GET /ws``: the WebSocket endpoint over plain ASGI.

Frames go through a bounded :class:`QueueOutbox` drained by one writer task per
connection, so fan-out never awaits a socket. (Under ``livefeed serve`` a faster
path writes pre-encoded frames straight to the socket; see docs/architecture.md.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from livefeed import metrics
from livefeed.envelope import Batch, Event
from livefeed.history import IdKey
from livefeed.protocol import CloseCode
from livefeed.session import QueueingOutbox, Services, Session, count_close
from livefeed.transports.direct import EXTENSION, DirectOutbox

log = logging.getLogger("livefeed.ws")

MAX_WAITING_FRAMES = 100  # admitted frames queued behind a slow one (a long subscribe)


class QueueOutbox(QueueingOutbox):
    """A bounded queue of text frames and the writer that drains it."""

    def __init__(self, websocket: WebSocket, max_frames: int, max_bytes: int) -> None:
        self._websocket = websocket
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._queue: deque[str] = deque()
        self._bytes = 0  # queued payload size (characters; bytes for ASCII JSON)
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._close: tuple[int, str] | None = None

    @property
    def closed(self) -> bool:
        return self._close is not None

    def _push(self, text: str) -> None:
        if self._close is not None:
            return
        self._queue.append(text)
        self._bytes += len(text)
        if len(self._queue) >= self._max_frames or self._bytes >= self._max_bytes:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: too many frames unsent")
            return
        self._wake.set()

    def send_event(self, event: Event) -> None:
        self._push(event.text)

    def send_batch(self, batch: Batch) -> None:
        for event in batch.events:
            self._push(event.text)

    def send_frame(self, frame: bytes, kind: str) -> None:
        self._push(frame.decode())

    def position(self, channel: str, key: IdKey) -> None:
        pass  # WebSocket clients track the ids of the events they receive

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            count_close(code)
            self._queue.clear()
            self._bytes = 0
            self._wake.set()
            self._drained.set()

    async def drain(self, frames: int, size: int) -> None:
        while (len(self._queue) >= frames or self._bytes >= size) and self._close is None:
            self._drained.clear()
            await self._drained.wait()

    async def run(self) -> None:
        """Write queued frames until closed; then send the close frame."""
        while self._close is None:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self._close is None:
                text = self._queue.popleft()
                self._bytes -= len(text)
                await self._websocket.send_text(text)
            self._drained.set()
        code, reason = self._close
        if self._websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self._websocket.close(code, reason)


class DetachedConnection:
    """Runs a session from the protocol's callbacks once the ASGI task has returned.

    Frames are admitted (size, rate) as they arrive and handled in order by a task
    that exists only while there is something to do: an idle subscriber has none.
    """

    __slots__ = ("_closed", "_connections", "_inbox", "_outbox", "_services", "_session", "_task")

    def __init__(self, services: Services, session: Session, outbox: DirectOutbox) -> None:
        self._services = services
        self._session = session
        self._outbox = outbox
        # Frames waiting their turn; a list, made on demand (an idle connection has none).
        self._inbox: list[str | tuple[str | None, str | None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._connections = metrics.CONNECTIONS.labels(transport="websocket")
        self._connections.inc()
        services.sessions.add(session)

    def start(self, tools: str | None, token: str | None) -> None:
        self._enqueue((tools, token))

    def on_text(self, text: str) -> None:
        if self._closed or not self._session.admit_frame(text):
            return
        if self._task is not None and self._session.answer_ping_now(text):
            return  # a ping while the broker is away: not behind a waiting subscribe
        if self._inbox is not None and len(self._inbox) >= MAX_WAITING_FRAMES:
            self._outbox.close(CloseCode.TOO_MANY_REQUESTS, "too many frames waiting")
            return
        self._enqueue(text)

    def on_binary(self) -> None:
        if not self._closed:
            self._session.handle_binary()

    def on_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._session.end()
        self._services.sessions.discard(self._session)
        self._connections.dec()

    def _enqueue(self, item: str | tuple[str | None, str | None]) -> None:
        if self._inbox is None:
            self._inbox = []
        self._inbox.append(item)
        if self._task is None:
            self._task = asyncio.create_task(self._work())

    async def _work(self) -> None:
        try:
            while self._inbox and not self._closed:
                item = self._inbox.pop(0)  # short: rate-limited, and at most 100
                if not self._inbox:
                    self._inbox = None
                if isinstance(item, tuple):
                    await self._session.start(*item)
                else:
                    await self._session.handle_frame(item)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("connection %s failed; closing it with 1011", self._session.id)
            self._outbox.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._task = None


async def serve_websocket(websocket: WebSocket, services: Services) -> None:
    """Run one connection. On the direct path the connection is handed to a
    :class:`DetachedConnection` and this returns at once; otherwise it runs the
    connection to its end, ``services.sessions`` holding it while it is open."""
    settings = services.settings
    await websocket.accept()
    query = websocket.query_params
    direct = websocket.scope.get("extensions", {}).get(EXTENSION)
    if direct is not None:
        outbox = DirectOutbox(direct, settings.outbox_frames, settings.outbox_bytes)
        connection = DetachedConnection(services, services.session(outbox, "websocket"), outbox)
        direct.detach(connection)
        connection.start(query.get("tools"), query.get("token"))
        return
    await _serve_asgi(websocket, services)


async def _serve_asgi(websocket: WebSocket, services: Services) -> None:
    """The plain-ASGI path: a receive loop here, a writer task per connection."""
    settings = services.settings
    outbox = QueueOutbox(websocket, settings.outbox_frames, settings.outbox_bytes)
    writer = asyncio.create_task(outbox.run(), name="ws writer")
    session = services.session(outbox, "websocket")
    connections = metrics.CONNECTIONS.labels(transport="websocket")
    connections.inc()
    services.sessions.add(session)
    try:
        query = websocket.query_params
        await session.start(query.get("tools"), query.get("token"))
        while not outbox.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is not None:
                await session.handle_text(message["text"])
            else:
                session.handle_binary()
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("connection %s failed; closing it with 1011", session.id)
        outbox.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        try:
            session.end()
            outbox.close(CloseCode.NORMAL, "")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, timeout=5)
            writer.cancel()
        finally:
            services.sessions.discard(session)
            connections.dec()
