"""The direct WebSocket path: pre-encoded frames written straight to the socket.

``livefeed serve`` runs uvicorn with :class:`DirectWebSocketProtocol`, uvicorn's own
sans-I/O websockets protocol plus one ASGI scope extension, ``livefeed.direct``.
The app stays a plain Starlette app on uvicorn: it still accepts, receives and
closes through ASGI, and falls back to ``websocket.send`` when the extension is
absent (another server, the test client). When present, :class:`DirectOutbox`
writes each event's frame, encoded once per process (:attr:`Event.ws_frame`),
straight to the transport: no ``await`` and no task per subscriber per event, and
the frame bytes are shared by every subscriber (server frames are unmasked).

It is also what makes the slow-consumer rule exact: frames that cannot be written
because the socket is backed up wait in a bounded list, and past the limit the
connection gets its 4008 close frame and is cut, without waiting on the client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from livefeed.envelope import Event
from livefeed.history import IdKey
from livefeed.protocol import CloseCode, ws_text_frame
from livefeed.session import count_close

log = logging.getLogger("livefeed.ws")

EXTENSION = "livefeed.direct"
ABORT_AFTER = 5.0  # seconds a closed connection may take to answer our close frame


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with raw writes offered to the app."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct_paused = False  # the transport's buffer is above its high-water mark
        self.on_resume: Any = None  # DirectOutbox hook: flush what waited

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The app task is created but has not run yet, so the scope can still grow.
        # Only without negotiated extensions (no compression) are shared frames valid.
        if getattr(self, "scope", None) is not None and not self.conn.extensions:
            self.scope["extensions"][EXTENSION] = self  # type: ignore[assignment]

    def send_receive_event_to_app(self) -> None:
        # uvicorn logs a client's invalid UTF-8 as an error with a traceback; it is bad
        # input, not a server fault: close with 1007 (RFC 6455 8.1) and note it quietly.
        if self.close_sent or self.conn.state is not State.OPEN:
            self.frames = []  # frames that came after a close: nothing more to do
            return
        if self.curr_msg_data_type == "text":
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                log.info("closed a connection that sent invalid UTF-8 (1007)")
                self.frames = []
                self.conn.send_close(1007, "invalid UTF-8 in a text frame")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    def pause_writing(self) -> None:

        super().pause_writing()
        self.direct_paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        self.direct_paused = False
        if self.on_resume is not None:
            self.on_resume()

    @property
    def direct_open(self) -> bool:
        """Whether frames may still be sent (neither side has started closing)."""
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.conn.state is State.OPEN
        )

    def direct_write(self, data: bytes) -> None:
        self.transport.write(data)

    def direct_buffered(self) -> int:
        return int(self.transport.get_write_buffer_size())

    def direct_close(self, code: int, reason: str) -> None:
        """Send a close frame now, even if the socket is backed up, tell the app, and
        cut the connection if the client does not answer in time."""
        if not self.direct_open:
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(ABORT_AFTER, self.transport.abort)


class DirectOutbox:
    """Frames to one subscriber, written to its socket as they come. While the socket
    is backed up they wait here, bounded: past ``max_frames`` waiting, or
    ``max_bytes`` waiting plus buffered, the connection is closed with 4008."""

    def __init__(self, protocol: DirectWebSocketProtocol, max_frames: int, max_bytes: int) -> None:
        self._protocol = protocol
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._waiting: list[bytes] = []
        self._waiting_bytes = 0
        self._closed = False
        self._drained = asyncio.Event()
        protocol.on_resume = self._flush

    @property
    def closed(self) -> bool:
        return self._closed or not self._protocol.direct_open

    def _write(self, frame: bytes) -> None:
        if self._closed:
            return
        if not self._protocol.direct_paused and not self._waiting:
            self._protocol.direct_write(frame)
            return
        self._waiting.append(frame)
        self._waiting_bytes += len(frame)
        if (
            len(self._waiting) >= self._max_frames
            or self._waiting_bytes + self._protocol.direct_buffered() >= self._max_bytes
        ):
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: too many frames unsent")

    def _flush(self) -> None:
        if self._waiting and not self._closed:
            waiting, self._waiting, self._waiting_bytes = self._waiting, [], 0
            self._protocol.direct_write(b"".join(waiting))
        self._drained.set()

    def send_event(self, event: Event) -> None:
        self._write(event.ws_frame)

    def send_frame(self, frame: bytes, kind: str) -> None:
        self._write(ws_text_frame(frame))

    def position(self, channel: str, key: IdKey) -> None:
        pass  # WebSocket clients track the ids of the events they receive

    def close(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            count_close(code)
            self._waiting, self._waiting_bytes = [], 0
            self._drained.set()
            self._protocol.on_resume = None
            self._protocol.direct_close(code, reason)

    async def drain(self, below: int) -> None:
        while len(self._waiting) >= below and not self.closed:
            self._drained.clear()
            await self._drained.wait()
