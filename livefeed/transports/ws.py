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
from livefeed.envelope import Event
from livefeed.history import IdKey
from livefeed.protocol import CloseCode
from livefeed.session import Services, count_close
from livefeed.transports.direct import EXTENSION, DirectOutbox

log = logging.getLogger("livefeed.ws")


class QueueOutbox:
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

    async def drain(self, below: int) -> None:
        while len(self._queue) >= below and self._close is None:
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


async def serve_websocket(websocket: WebSocket, services: Services) -> None:
    """Run one connection to its end; ``services.sessions`` holds it while it is open."""
    settings = services.settings
    await websocket.accept()
    direct = websocket.scope.get("extensions", {}).get(EXTENSION)
    outbox: QueueOutbox | DirectOutbox
    if direct is not None:
        outbox = DirectOutbox(direct, settings.outbox_frames, settings.outbox_bytes)
        writer = None
    else:
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
            if writer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer, timeout=5)
                writer.cancel()
        finally:
            services.sessions.discard(session)
            connections.dec()
