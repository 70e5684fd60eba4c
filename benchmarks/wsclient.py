"""A deliberately cheap WebSocket subscriber: a raw asyncio Protocol.

The generator shares one core with Redis and the publisher, so a counting connection
does the HTTP upgrade and the subscribe handshake with full frame parsing, then only
walks the (unmasked) server frame headers in ``data_received`` to count frames. Probe
connections keep parsing every frame to read the publish timestamp for latency.

Two dialects: ``plain`` (JSON text frames; ready on a frame saying ``"subscribed"``,
or on the 101 for a server that sends no acknowledgement) and ``socketio`` (Engine.IO
v4 / Socket.IO v5: ``0{...}`` open, ``40`` connect, ``42["subscribe", tool]`` answered by
``42["subscribed", ...]``, Engine.IO ping ``2`` answered with ``3``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from enum import Enum
from typing import cast

_OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING = 1, 2, 8, 9
SO_TIMESTAMPNS = 35  # Linux (asm-generic); the socket module does not name it
_TIMESPEC = struct.Struct("qq")
MARKER = b"@t="
"""Prefix of the publish timestamp that every benchmark event carries in its text."""


class Dialect(Enum):
    PLAIN = "plain"
    SOCKETIO = "socketio"


class State(Enum):
    UPGRADING = 0
    HANDSHAKE = 1
    READY = 2
    CLOSED = 3


def client_frame(payload: bytes, opcode: int = _OP_TEXT) -> bytes:
    """A masked client frame (RFC 6455 5.3). A zero key leaves the payload as is."""
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    else:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    return header + b"\x00\x00\x00\x00" + payload


def parse_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split complete server frames off ``buf``: ([(opcode, payload)], remainder)."""
    frames, pos, end = [], 0, len(buf)
    while pos + 2 <= end:
        length = buf[pos + 1] & 0x7F
        head = pos + 2
        if length == 126:
            if head + 2 > end:
                break
            length, head = int.from_bytes(buf[head : head + 2], "big"), head + 2
        elif length == 127:
            if head + 8 > end:
                break
            length, head = int.from_bytes(buf[head : head + 8], "big"), head + 8
        if head + length > end:
            break
        frames.append((buf[pos] & 0x0F, buf[head : head + length]))
        pos = head + length
    return frames, buf[pos:]


def read_timestamp(payload: bytes) -> float | None:
    """The ``@t=<unix seconds>`` publish time inside an event's text, if any."""
    start = payload.find(MARKER)
    if start < 0:
        return None
    start += len(MARKER)
    stop = start
    while stop < len(payload) and payload[stop] in b"0123456789.":
        stop += 1
    try:
        return float(payload[start:stop])
    except ValueError:
        return None


_READ_BUFFER = bytearray(256 * 1024)
_READ_VIEW = memoryview(_READ_BUFFER)
"""One receive buffer for every connection: reads are handled one at a time, to completion."""


class Subscriber(asyncio.BufferedProtocol):
    """One subscribed connection; ``count`` is the event frames received once ready.

    A BufferedProtocol reading into one shared buffer: no bytes object per read on the
    counting path (measured: about a third less generator CPU per delivery).
    """

    def __init__(
        self,
        host: str,
        path: str,
        dialect: Dialect,
        tool: str,
        *,
        acks: bool,
        probe: bool,
        on_ready: Callable[[Subscriber], None],
        latencies: list[tuple[float, float]] | None = None,
    ) -> None:
        self.count = 0
        self.state = State.UPGRADING
        self.close_reason = ""
        self.tool = tool
        self._host, self._path, self._dialect = host, path, dialect
        self._acks = acks  # False: the server sends nothing on subscribe (Nchan): ready at 101
        self.probe = probe
        self._on_ready = on_ready
        # Probes append (arrival - publish, read - publish), in seconds: arrival is the
        # kernel's receive timestamp (see StampedTransport), read is when we got to it.
        self._latencies = latencies
        self._arrival: float | None = None  # kernel timestamp of the data being handled
        self._transport: asyncio.Transport | None = None
        self._buf = b""  # unparsed bytes (upgrade, handshake, probe frames, split headers)
        self._skip = 0  # counting mode: bytes of the current frame's payload still to skip
        self._sio = dialect is Dialect.SOCKETIO

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self._transport = cast(asyncio.Transport, transport)
        request = (
            f"GET {self._path} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self._transport.write(request.encode())

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        if self.state is State.READY and not self.probe:
            self._count(_READ_BUFFER, nbytes)
        else:
            self._received(bytes(_READ_VIEW[:nbytes]))

    def stamped_update(self, nbytes: int, arrival: float | None) -> None:
        """``buffer_updated`` with the kernel's receive time of the data (probes)."""
        self._arrival = arrival
        try:
            self.buffer_updated(nbytes)
        finally:
            self._arrival = None

    def _received(self, data: bytes | bytearray) -> None:
        """The careful path: upgrade, handshake and probes parse every frame."""
        self._buf += data
        if self.state is State.UPGRADING and not self._upgrade():
            return
        frames, self._buf = parse_frames(self._buf)
        for index, (opcode, payload) in enumerate(frames):
            if self.state is State.READY and not self.probe:
                # The ack was mid-chunk: count what followed it with the fast path.
                rest = b"".join(_reframe(op, body) for op, body in frames[index:])
                rest, self._buf = rest + self._buf, b""
                self._count(rest, len(rest))
                return
            self._on_frame(opcode, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is not State.CLOSED:
            self.close_reason = self.close_reason or (repr(exc) if exc else "eof")
        self.state = State.CLOSED

    # -- control --------------------------------------------------------------------------

    def set_rcvlowat(self, nbytes: int) -> None:
        if self._transport is not None and self.state is State.READY:
            sock = self._transport.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)

    def close(self) -> None:
        self.state = State.CLOSED
        if self._transport is not None:
            self._transport.abort()

    def _send_text(self, text: bytes) -> None:
        if self._transport is not None:
            self._transport.write(client_frame(text))

    def _upgrade(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = self._buf[: self._buf.find(b"\r\n")]
        if b" 101 " not in status + b" ":
            self.close_reason = status.decode(errors="replace")
            self.close()
            return False
        self._buf = self._buf[end + 4 :]
        self.state = State.HANDSHAKE
        if not self._acks and not self._sio:
            self._ready()
        return True

    def _ready(self) -> None:
        self.state = State.READY
        self._on_ready(self)

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == _OP_PING:
            if self._transport is not None:
                self._transport.write(client_frame(payload, 0xA))
        elif opcode == _OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close_reason = f"close {code}"
            self.close()
        elif opcode in (_OP_TEXT, _OP_BINARY):
            if self.state is State.READY:
                self._on_event(payload)
            elif self._sio:
                self._sio_handshake(payload)
            elif b'"subscribed"' in payload:
                self._ready()
            elif b'"error"' in payload:
                self.close_reason = payload[:200].decode(errors="replace")

    def _sio_handshake(self, payload: bytes) -> None:
        if payload.startswith(b"0{"):
            self._send_text(b"40")
        elif payload.startswith(b"40"):
            self._send_text(b'42["subscribe","' + self.tool.encode() + b'"]')
        elif payload.startswith(b'42["subscribed"'):
            self._ready()
        elif payload == b"2":
            self._send_text(b"3")

    def _on_event(self, payload: bytes) -> None:
        if self._sio and payload == b"2":
            self._send_text(b"3")
            return
        self.count += 1
        if self._latencies is not None:
            sent = read_timestamp(payload)
            if sent is not None:
                read = time.time()
                arrival = read if self._arrival is None else self._arrival
                self._latencies.append((arrival - sent, read - sent))

    # -- the fast path -------------------------------------------------------------------

    def _count(self, data: bytes | bytearray, end: int) -> None:
        """Count data frames in ``data[:end]`` by walking headers; payloads are skipped unread."""
        if self._buf:
            data, self._buf = self._buf + data[:end], b""
            end = len(data)
        pos = self._skip
        if pos >= end:
            self._skip = pos - end
            return
        frames = 0
        while pos < end:
            if pos + 2 > end:
                break
            length = data[pos + 1] & 0x7F
            head = pos + 2
            if length == 126:
                if head + 2 > end:
                    break
                length = (data[head] << 8) | data[head + 1]
                head += 2
            elif length == 127:
                if head + 8 > end:
                    break
                length = int.from_bytes(data[head : head + 8], "big")
                head += 8
            opcode = data[pos] & 0x0F
            if opcode >= _OP_CLOSE or (self._sio and length == 1):
                # Control frames and Engine.IO pings ("2") need their payload: slow path.
                if head + length > end:
                    break
                payload = bytes(data[head : head + length])
                if opcode == _OP_TEXT and payload != b"2":
                    frames += 1
                else:
                    self._on_frame(opcode, payload)
            elif opcode in (_OP_TEXT, _OP_BINARY):
                frames += 1
            pos = head + length
        self.count += frames
        if pos > end:
            self._skip, self._buf = pos - end, b""
        else:
            self._skip, self._buf = 0, bytes(data[pos:end])


def _reframe(opcode: int, payload: bytes) -> bytes:
    """Re-encode an already parsed server frame (unmasked) for the counting path."""
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, length])
    elif length < 65536:
        header = bytes([0x80 | opcode, 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 127]) + length.to_bytes(8, "big")
    return header + payload


class StampedTransport:
    """A probe's socket, read with ``recvmsg`` to get the kernel's receive timestamp.

    The load core runs the generator, the publisher, Redis and (steered) every client's
    TCP receive, so a probe's frame can wait there before the generator reads it. On a
    real network that wait is on each client's own machine; the server is done when its
    frame is on the wire. With ``SO_TIMESTAMPNS`` the kernel stamps each packet as it
    enters the receive path (on loopback: as the server's send hands it over, before the
    RPS queue), so the latency is the server's and the publish path's, not the load
    core's queue. ``Subscriber`` also records when the generator read the frame. A read
    that spans two packets carries the later stamp: the error is on the slow side.
    Only probes use this (a few per fleet); counting connections stay on uvloop's
    transports.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: Subscriber
    ) -> None:
        self._loop, self._sock, self._protocol = loop, sock, protocol
        self._open = True
        self._unsent = b""  # what a full send buffer did not take yet (rare: control frames)
        protocol.connection_made(cast(asyncio.Transport, self))
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            nbytes, ancillary, _flags, _addr = self._sock.recvmsg_into(
                [self._protocol.get_buffer(-1)], socket.CMSG_SPACE(_TIMESPEC.size)
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        if nbytes == 0:
            self._lose(None)
            return
        arrival = None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                arrival = seconds + nanoseconds * 1e-9
        self._protocol.stamped_update(nbytes, arrival)

    def write(self, data: bytes) -> None:
        if not self._open:
            return
        if self._unsent:  # keep the order: behind what is already waiting
            self._unsent += data
            return
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lose(exc)
            return
        if sent < len(data):
            self._unsent = data[sent:]
            self._loop.add_writer(self._sock.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        self._unsent = self._unsent[sent:]
        if not self._unsent:
            self._loop.remove_writer(self._sock.fileno())

    def get_extra_info(self, name: str) -> object:
        return self._sock if name == "socket" else None

    def abort(self) -> None:
        self._lose(None)

    def _lose(self, exc: Exception | None) -> None:
        if not self._open:
            return
        self._open = False
        self._loop.remove_reader(self._sock.fileno())
        if self._unsent:
            self._loop.remove_writer(self._sock.fileno())
        self._sock.close()
        self._protocol.connection_lost(exc)


async def open_stamped(port: int, protocol: Subscriber) -> StampedTransport:
    """Connect ``protocol`` to 127.0.0.1:port over a socket that timestamps receives."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        await loop.sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return StampedTransport(loop, sock, protocol)
