"""The direct WebSocket path: pre-encoded frames written straight to the socket.

``livefeed serve`` runs uvicorn with :class:`DirectWebSocketProtocol`, uvicorn's own
sans-I/O websockets protocol plus one ASGI scope extension, ``livefeed.direct``.
The app stays a plain Starlette app on uvicorn: it still accepts, receives and
closes through ASGI, and falls back to ``websocket.send`` when the extension is
absent (another server, the test client). When present, :class:`DirectOutbox`
writes each event's frame, encoded once per process (:attr:`Event.ws_frame`),
straight to the transport: no ``await`` and no task per subscriber per event, and
the frame bytes are shared by every subscriber (server frames are unmasked).

On a plain TCP (or Unix) connection the hub's writes skip the transport too: they
are ``send`` calls on a duplicate of the connection's descriptor, made only while
the transport has nothing buffered (its high-water mark is 0, so a single byte
buffered pauses it and the outbox takes over), and what a send does not take goes
to the transport, behind which everything else then waits. That is one C call per
subscriber per batch, and the kernel's ``send`` path rather than ``write``'s.
TLS connections keep the transport's ``write``.

It is also what makes the slow-consumer rule exact: frames that cannot be written
because the socket is backed up wait in a bounded list, and past the limit the
connection gets its 4008 close frame and is cut, without waiting on the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
from collections.abc import Callable
from typing import Any, Protocol

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol as WebSocketProtocolParser
from websockets.protocol import State

from livefeed.envelope import Batch, Event
from livefeed.history import IdKey
from livefeed.hub import Writer
from livefeed.protocol import CloseCode, ws_text_frame
from livefeed.session import count_close
from livefeed.transports.keepalive import PING_FRAME, Keepalive

log = logging.getLogger("livefeed.ws")

EXTENSION = "livefeed.direct"
ABORT_AFTER = 5.0  # seconds a closed connection may take to answer our close frame


class Receiver(Protocol):
    """What drives a detached connection (see :meth:`DirectWebSocketProtocol.detach`)."""

    def on_text(self, text: str) -> None: ...

    def on_binary(self) -> None: ...

    def on_closed(self) -> None: ...


class _Dispatch:
    """Stands in for uvicorn's ASGI receive queue once a connection is detached: the
    disconnect message uvicorn posts on every way a connection ends goes straight to
    the receiver."""

    __slots__ = ("receiver",)

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def put_nowait(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.disconnect":
            # Soon, not now: a close can start inside the hub's fan-out loop, which must
            # not see its subscriber set change under it.
            asyncio.get_running_loop().call_soon(self.receiver.on_closed)

    def empty(self) -> bool:
        return True


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with raw writes offered to the app, and
    the option to carry on without the app's ASGI task (:meth:`detach`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct_paused = False  # the transport's buffer is above its high-water mark
        self.outbox: DirectOutbox | None = None  # set once the app took the direct path
        self.receiver: Receiver | None = None  # set once detached
        self.ping_missed: int | None = None  # see Keepalive
        self.keepalive_bucket: set[Any] | None = None

    def detach(self, receiver: Receiver) -> None:
        """From now on client frames and the end of the connection go to ``receiver``,
        and the app's task may return without closing the connection. An idle
        subscriber then costs no task, no coroutine frames and no ASGI queue (the
        measure that took idle memory from 27 KB to ~10 KB per connection)."""
        queued = self.queue
        self.receiver = receiver
        self.queue = _Dispatch(receiver)  # type: ignore[assignment]
        while not queued.empty():  # anything that came before (nothing, normally)
            message = queued.get_nowait()
            if message["type"] == "websocket.receive":
                self._dispatch(message.get("text"))
            else:
                self.queue.put_nowait(message)
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        # What only the handshake and the ASGI app needed. The handshake parser's frame
        # keeps the request (headers and all) alive; right after the 101, before any
        # frame could arrive, it is swapped for the plain frame parser it delegates to.
        self.request = self.response = None  # type: ignore[assignment]
        self.scope = None  # type: ignore[assignment]
        if not self.conn.reader.buffer:
            self.conn.parser = WebSocketProtocolParser.parse(self.conn)
            next(self.conn.parser)

    def _dispatch(self, text: str | None) -> None:
        assert self.receiver is not None
        if text is None:
            self.receiver.on_binary()
        else:
            self.receiver.on_text(text)

    async def run_asgi(self) -> None:
        # uvicorn's, except that a detached connection outlives the app's task.
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
        if self.receiver is None and self.close_timer is None:
            self.transport.close()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The app task is created but has not run yet, so the scope can still grow.
        # Only without negotiated extensions (no compression) are shared frames valid.
        if getattr(self, "scope", None) is not None and not self.conn.extensions:
            self.scope["extensions"][EXTENSION] = self  # type: ignore[assignment]

    # Keepalive: one timer for every connection of the server (see keepalive.py), not
    # uvicorn's two timers and a fresh ping payload per connection.

    def _keepalive(self) -> Keepalive:
        keepalive: Keepalive | None = getattr(self.config, "livefeed_keepalive", None)
        if keepalive is None:  # uvicorn gives every connection of a server the same config
            assert self.ping_interval is not None
            keepalive = Keepalive(self.ping_interval, self.ping_timeout)
            self.config.livefeed_keepalive = keepalive  # type: ignore[attr-defined]
        return keepalive

    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            self._keepalive().add(self)

    def stop_keepalive(self) -> None:
        super().stop_keepalive()
        if self.keepalive_bucket is not None:
            self._keepalive().remove(self)

    def send_keepalive_ping(self) -> None:
        if self.direct_open and not self.transport.is_closing():
            self.transport.write(PING_FRAME)

    def handle_pong(self, event: Any) -> None:
        self.ping_missed = None

    def handle_ping(self) -> None:
        # uvicorn writes the pongs websockets queued whatever the socket's state: a
        # client that sends pings and reads nothing piled them up in the server without
        # bound (100 MB of pings held ~95 MB), and no event ever came to apply the
        # slow-consumer rule. Pongs count against its byte limit like any frame, and
        # once the connection is closing they are not sent at all.
        if self.outbox is None:  # not on the direct path (yet): as uvicorn does
            super().handle_ping()
            return
        if self.conn.close_rcvd is not None:
            # The client's close came in the same read, after this ping: what websockets
            # queued is the pong, then the echo of that close. handle_close, next, sends
            # it all (dropping it here left the client without its close frame: 1006).
            return
        pongs = b"".join(self.conn.data_to_send())
        if self.direct_open and not self.transport.is_closing():
            self.transport.write(pongs)
            self.outbox.written()

    def keepalive_timeout(self) -> None:
        self.stop_keepalive()
        self._stop_outbox()
        if self.close_sent or self.transport.is_closing():
            return  # already closing, and whoever closed it told the app
        super().keepalive_timeout()  # a 1011 close frame, then transport.close()
        count_close(CloseCode.INTERNAL_ERROR)
        # uvicorn does not tell the app, and the socket closes only once its buffer has
        # drained, which a client that stopped reading never lets happen: without this,
        # its session, subscriptions and presence would live on for ever.
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": 1011, "reason": "keepalive ping timeout"}
        )
        self._abort_later()

    def send_receive_event_to_app(self) -> None:
        # uvicorn logs a client's invalid UTF-8 as an error with a traceback; it is bad
        # input, not a server fault: close with 1007 (RFC 6455 8.1) and note it quietly.
        if self.close_sent or self.conn.state is not State.OPEN:
            self.frames = []  # frames that came after a close: nothing more to do
            return
        text = None
        if self.curr_msg_data_type == "text":
            try:
                text = b"".join(self.frames).decode()
            except UnicodeDecodeError:
                log.info("closed a connection that sent invalid UTF-8 (1007)")
                self.frames = []
                self.conn.send_close(1007, "invalid UTF-8 in a text frame")
                self.handle_parser_exception()
                return
        if self.receiver is None:
            super().send_receive_event_to_app()
            return
        self.frames = []
        self._dispatch(text)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.direct_paused = True
        if self.outbox is not None:
            self.outbox.paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.direct_paused = False
        if self.outbox is not None:
            self.outbox.resumed()

    # Every way the connection ends stops the outbox first: no write may follow.

    def _stop_outbox(self) -> None:
        if self.outbox is not None:
            self.outbox.stop()

    def handle_close(self, event: Any) -> None:
        self._stop_outbox()
        super().handle_close(event)
        # After the client's close (uvicorn has echoed it, or it answered ours) no close
        # frame may be sent; uvicorn's shutdown would try one unless this is set, and
        # raise InvalidState, ending the shutdown of every other connection with it.
        self.close_sent = True
        self._abort_later()  # (uvicorn cancels the timer of a close we started)

    def handle_parser_exception(self) -> None:
        self._stop_outbox()
        closing = self.close_sent  # the server had closed already (and counted it)
        super().handle_parser_exception()  # tells the app; 1009 or 1007, transport.close()
        if not closing and self.conn.close_sent is not None:  # the close this error made
            count_close(self.conn.close_sent.code)
        self._abort_later()

    def shutdown(self) -> None:
        self._stop_outbox()
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_outbox()
        super().connection_lost(exc)
        # Cycles only a full garbage collection would free, broken now: the parser is a
        # generator whose frame holds the websockets connection (waiting for an EOF a
        # closed connection may never feed it), and a client's protocol error is kept
        # with its traceback, which holds the parser's frame.
        self.conn.parser.close()
        self.conn.parser_exc = None

    @property
    def direct_open(self) -> bool:
        """Whether frames may still be sent (neither side has started closing)."""
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.conn.state is State.OPEN
        )

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
        self._abort_later()

    def _abort_later(self) -> None:
        """Cut the socket if it has not closed within ABORT_AFTER. A close waits for the
        write buffer to drain, and a client that stopped reading (a frozen tab, a zero
        TCP window) would hold the connection and its backlog for ever."""
        if self.close_timer is None and not self.disconnected:
            self.close_timer = self.loop.call_later(ABORT_AFTER, self.transport.abort)


def _raw_descriptor_ceiling() -> int:
    """Duplicates are made only below half the process's descriptor limit: a dup costs
    a descriptor per connection, and above that the rest of the limit is kept for
    connections themselves (which then send through their transport)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft // 2


RAW_DESCRIPTOR_CEILING = _raw_descriptor_ceiling()


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the process's soft open-file limit to its hard limit, as Go programs do at
    start, and move the duplicates' ceiling with it; returns the soft limit before and
    after. Each WebSocket subscriber holds two descriptors here, and a soft limit of
    1,024 (a common default, with a far higher hard limit) would refuse connections
    long before memory or CPU ran short. Only for ``livefeed serve``: in another
    server the process and its limits are that server's."""
    global RAW_DESCRIPTOR_CEILING
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if before != hard:
        # (refused for a hard limit above the kernel's nr_open: the limit stays as it was)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    RAW_DESCRIPTOR_CEILING = _raw_descriptor_ceiling()
    return before, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raw_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    """A non-blocking duplicate of a plain (not TLS) connection's socket, or None.

    A duplicate, not the transport's own descriptor: once the transport closes it, its
    number can go to a new connection at once, and a send on it would reach the wrong
    client. The duplicate keeps the socket itself open until :meth:`DirectOutbox.stop`
    closes it (the last step of every way a connection ends). None also when
    descriptors run short (see :func:`_raw_descriptor_ceiling`)."""
    if transport.get_extra_info("sslcontext") is not None:
        return None
    own = transport.get_extra_info("socket")
    if own is None:
        return None
    try:
        fd = os.dup(own.fileno())
    except OSError:
        return None
    if fd >= RAW_DESCRIPTOR_CEILING:
        os.close(fd)
        return None
    try:
        # family, type and protocol given: no getsockopt calls to find them out
        raw = socket.socket(own.family, own.type, 0, fileno=fd)
        raw.setblocking(False)
    except OSError:
        os.close(fd)
        return None
    return raw


class DirectOutbox:
    """Frames to one subscriber, written to its socket as they come. While the socket
    is backed up they wait here, bounded: past ``max_frames`` waiting, or
    ``max_bytes`` waiting plus buffered, the connection is closed with 4008.

    The hot path is :attr:`writer`: the ``send`` of a duplicate of the connection's
    socket (see :func:`raw_socket`), which the hub calls with bytes shared with every
    other subscriber while the socket is clear. What a send does not take goes to the
    transport (:meth:`_rest`), which buffers it and pauses: the writer goes, and the
    hub is told, before anything else can be written (``pause_writing`` comes from
    inside the transport's ``write``), so from then on frames come through
    :meth:`send_batch` and wait in order. On TLS there is no writer: batches come
    through :meth:`send_batch` and the transport's ``write``.
    """

    __slots__ = (
        "_clear",
        "_drained",
        "_max_bytes",
        "_max_frames",
        "_protocol",
        "_raw",
        "_waiting",
        "_waiting_bytes",
        "_waiting_frames",
        "_write",
        "_writer",
        "_writer_changed",
    )

    def __init__(self, protocol: DirectWebSocketProtocol, max_frames: int, max_bytes: int) -> None:
        # None once stopped. Dropping it breaks the one cycle a connection's objects
        # form (protocol -> outbox -> protocol), so a closed connection is freed by
        # reference counting, not left for a full garbage collection.
        self._protocol: DirectWebSocketProtocol | None = protocol
        transport = protocol.transport
        self._write = transport.write
        self._raw = raw_socket(transport)
        self._writer = None if self._raw is None else Writer(self._raw.send, self._rest)
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._clear = not protocol.direct_paused  # write straight through
        self._waiting: list[bytes] = []  # what the backed-up socket could not take yet
        self._waiting_frames = 0
        self._waiting_bytes = 0
        self._drained: asyncio.Event | None = None  # made only if a replay has to wait
        self._writer_changed: Callable[[], None] | None = None
        protocol.outbox = self
        if self._raw is not None:
            # Raw sends must never overtake bytes the transport holds: with a high-water
            # mark of 0, any byte it holds pauses it, and the writer goes until it drains.
            transport.set_write_buffer_limits(high=0)

    @property
    def closed(self) -> bool:
        return self._protocol is None or not self._protocol.direct_open

    @property
    def writer(self) -> Writer | None:
        return self._writer if self._clear else None

    def on_writer_change(self, changed: Callable[[], None]) -> None:
        self._writer_changed = changed

    def _set_clear(self, clear: bool) -> None:
        if clear != self._clear:
            self._clear = clear
            if self._writer_changed is not None:
                self._writer_changed()

    def _rest(self, data: bytes, taken: int) -> None:
        """What a raw send did not take: to the transport, which buffers it and pauses
        (or, if the socket failed, ends the connection its own way). Dropped once the
        connection is closing (the hub's batch may still reach a stopped outbox)."""
        protocol = self._protocol
        if protocol is None or not protocol.direct_open:
            return
        self._write(data[taken:])  # (bytes: [0:] is the same object, no copy)

    def send_batch(self, batch: Batch) -> None:
        if self._clear:
            self._write(batch.ws_bytes)
        else:
            self._hold(batch.ws_bytes, len(batch))

    def send_event(self, event: Event) -> None:
        if self._clear:
            self._write(event.ws_frame)
        else:
            self._hold(event.ws_frame, 1)

    def send_frame(self, frame: bytes, kind: str) -> None:
        if self._clear:
            self._write(ws_text_frame(frame))
        else:
            self._hold(ws_text_frame(frame), 1)

    def position(self, channel: str, key: IdKey) -> None:
        pass  # WebSocket clients track the ids of the events they receive

    def _hold(self, data: bytes, frames: int) -> None:
        protocol = self._protocol
        if protocol is None or not protocol.direct_open:
            return
        self._waiting.append(data)
        self._waiting_frames += frames
        self._waiting_bytes += len(data)
        self._enforce_limits(protocol)

    def _unsent_bytes(self, protocol: DirectWebSocketProtocol) -> int:
        """What waits here plus what the transport has buffered."""
        return self._waiting_bytes + protocol.direct_buffered()

    def _enforce_limits(self, protocol: DirectWebSocketProtocol) -> None:
        if (
            self._waiting_frames >= self._max_frames
            or self._unsent_bytes(protocol) >= self._max_bytes
        ):
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: too many frames unsent")

    # Called by the protocol.

    def written(self) -> None:
        """The protocol wrote something of its own (pongs): the limits hold for what is
        buffered then, as for frames of the app."""
        if self._protocol is not None:
            self._enforce_limits(self._protocol)

    def paused(self) -> None:
        self._set_clear(False)

    def resumed(self) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        if self._waiting:
            waiting = self._waiting
            self._waiting, self._waiting_frames, self._waiting_bytes = [], 0, 0
            self._write(b"".join(waiting))
        self._set_clear(protocol.direct_open and not protocol.direct_paused)
        if self._drained is not None:
            self._drained.set()

    def stop(self) -> None:
        """The connection is closing: write nothing more."""
        self._set_clear(False)
        self._writer_changed = None  # (a cycle through the session, broken)
        self._protocol = None
        if self._raw is not None:
            self._raw.close()  # a send still in the hub's hands now raises: nothing sent
            self._raw = self._writer = None
        self._waiting, self._waiting_frames, self._waiting_bytes = [], 0, 0
        if self._drained is not None:
            self._drained.set()

    def close(self, code: int, reason: str) -> None:
        protocol = self._protocol
        if protocol is not None:
            count_close(code)
            self.stop()
            protocol.direct_close(code, reason)

    async def drain(self, frames: int, size: int) -> None:
        # Bytes count what waits here and in the transport's buffer, as the 4008 rule
        # does, but only while writing is paused: then resumed() (or stop()) comes to
        # wake this. (Frames wait here only while it is paused.)
        while (
            (protocol := self._protocol) is not None
            and not self.closed
            and not self._clear
            and (self._waiting_frames >= frames or self._unsent_bytes(protocol) >= size)
        ):
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            await self._drained.wait()
