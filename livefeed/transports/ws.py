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
from livefeed.session import Outbox, QueueingOutbox, Services, Session, count_close
from livefeed.transports.direct import EXTENSION, DirectOutbox

log = logging.getLogger("livefeed.ws")

MAX_WAITING_FRAMES = 100  # admitted frames queued behind a slow one (a long subscribe)
# A frame handled for longer is waiting for the broker (a subscribe during an outage):
# pings stop waiting behind it, so that a client's liveness check (livefeed.js times
# out after 10 s) does not take the wait for a dead connection. Well above the time a
# subscribe takes with the broker up, so that frames keep their order then.
SLOW_FRAME = 1.0  # seconds


class QueueOutbox(QueueingOutbox):
    """A bounded queue of text frames and the writer that drains it."""

    def __init__(self, websocket: WebSocket, max_frames: int, max_bytes: int) -> None:
        self._websocket = websocket
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._queue: deque[tuple[str, int]] = deque()  # text, and its size in UTF-8
        self._bytes = 0  # queued payload bytes (not characters: non-ASCII text is longer)
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._close: tuple[int, str] | None = None

    @property
    def closed(self) -> bool:
        return self._close is not None

    def _push(self, text: str, size: int) -> None:
        if self._close is not None:
            return
        self._queue.append((text, size))
        self._bytes += size
        if len(self._queue) >= self._max_frames or self._bytes >= self._max_bytes:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: too many frames unsent")
            return
        self._wake.set()

    def send_event(self, event: Event) -> None:
        self._push(event.text, len(event.payload))

    def send_batch(self, batch: Batch) -> None:
        for event in batch.events:
            self._push(event.text, len(event.payload))

    def send_frame(self, frame: bytes, kind: str) -> None:
        self._push(frame.decode(), len(frame))

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
                text, size = self._queue.popleft()
                self._bytes -= size
                await self._websocket.send_text(text)
            self._drained.set()
        code, reason = self._close
        if self._websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self._websocket.close(code, reason)


class Connection:
    """Runs a session from a WebSocket connection's frames: fed by the protocol's
    callbacks once the ASGI task has returned (the direct path), or by the receive
    loop of :func:`_serve_asgi`.

    Frames are admitted (size, rate) as they arrive and handled in order by a task
    that exists only while there is something to do: an idle subscriber has none.
    Once the frame being handled has taken :data:`SLOW_FRAME` (a subscribe waiting
    for the broker), the pings waiting behind it are answered, and those that
    arrive are answered at once, until it is done.
    """

    __slots__ = (
        "_closed",
        "_connections",
        "_inbox",
        "_outbox",
        "_services",
        "_session",
        "_slow",
        "_task",
    )

    def __init__(self, services: Services, session: Session, outbox: Outbox) -> None:
        self._services = services
        self._session = session
        self._outbox = outbox
        # Frames waiting their turn; a list, made on demand (an idle connection has none).
        self._inbox: list[str | tuple[str | None, str | None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._slow = False  # the frame being handled has taken SLOW_FRAME so far
        self._closed = False
        self._connections = metrics.CONNECTIONS.labels(transport="websocket")
        self._connections.inc()
        services.sessions.add(session)

    def start(self, tools: str | None, token: str | None) -> None:
        self._enqueue((tools, token))

    def on_text(self, text: str) -> None:
        if self._closed or not self._session.admit_frame(text):
            return
        if self._slow and self._session.answer_if_ping(text):
            return
        if self._inbox is not None and len(self._inbox) >= MAX_WAITING_FRAMES:
            self._outbox.close(CloseCode.TOO_MANY_REQUESTS, "too many frames waiting")
            return
        self._enqueue(text)

    def _became_slow(self) -> None:
        """The frame being handled has taken SLOW_FRAME: answer the pings waiting
        behind it now (each waiting frame is parsed here once, not per ping)."""
        self._slow = True
        if self._inbox is not None:
            answer = self._session.answer_if_ping
            rest = [item for item in self._inbox if isinstance(item, tuple) or not answer(item)]
            self._inbox = rest or None

    def on_binary(self) -> None:
        if not self._closed:
            self._session.handle_binary()

    def on_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        try:
            self._session.end()
        finally:
            self._services.sessions.discard(self._session)
            self._connections.dec()

    def _enqueue(self, item: str | tuple[str | None, str | None]) -> None:
        if self._inbox is None:
            self._inbox = []
        self._inbox.append(item)
        if self._task is None:
            self._task = asyncio.create_task(self._work())

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._inbox and not self._closed:
                item = self._inbox.pop(0)  # short: rate-limited, and at most 100
                if not self._inbox:
                    self._inbox = None
                self._slow = False
                slow = loop.call_later(SLOW_FRAME, self._became_slow)
                try:
                    if isinstance(item, tuple):
                        await self._session.start(*item)
                    else:
                        await self._session.handle_frame(item)
                finally:
                    slow.cancel()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("connection %s failed; closing it with 1011", self._session.id)
            self._outbox.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._task = None
            self._slow = False


async def serve_websocket(websocket: WebSocket, services: Services) -> None:
    """Run one connection. On the direct path the connection is handed to a
    :class:`Connection` and this returns at once; otherwise it runs the connection
    to its end, ``services.sessions`` holding it while it is open."""
    settings = services.settings
    await websocket.accept()
    query = websocket.query_params
    direct = websocket.scope.get("extensions", {}).get(EXTENSION)
    if direct is not None:
        outbox = DirectOutbox(direct, settings.outbox_frames, settings.outbox_bytes)
        connection = Connection(services, services.session(outbox, "websocket"), outbox)
        direct.detach(connection)
        connection.start(query.get("tools"), query.get("token"))
        return
    await _serve_asgi(websocket, services)


async def _serve_asgi(websocket: WebSocket, services: Services) -> None:
    """The plain-ASGI path: a receive loop feeding a :class:`Connection` (so frames are
    admitted and handled as on the direct path), a writer task per connection."""
    settings = services.settings
    outbox = QueueOutbox(websocket, settings.outbox_frames, settings.outbox_bytes)
    writer = asyncio.create_task(outbox.run(), name="ws writer")
    session = services.session(outbox, "websocket")
    connection = Connection(services, session, outbox)
    try:
        query = websocket.query_params
        connection.start(query.get("tools"), query.get("token"))
        while not outbox.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect" or outbox.closed:
                break
            if message.get("text") is not None:
                connection.on_text(message["text"])
            else:
                connection.on_binary()
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("connection %s failed; closing it with 1011", session.id)
        outbox.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        try:
            connection.on_closed()
        finally:
            outbox.close(CloseCode.NORMAL, "")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, timeout=5)
            writer.cancel()
