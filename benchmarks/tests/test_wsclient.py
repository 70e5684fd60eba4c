"""The generator's frame handling, byte by byte: counting must be exact for loss figures."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time

from benchmarks.wsclient import (
    Dialect,
    State,
    Subscriber,
    _reframe,
    client_frame,
    open_stamped,
    parse_frames,
    read_timestamp,
)


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        pass

    def get_extra_info(self, name: str) -> None:
        return None


def _subscriber(dialect: Dialect = Dialect.PLAIN, *, probe: bool = False) -> Subscriber:
    latencies: list[tuple[float, float]] = []
    sub = Subscriber(
        "127.0.0.1:1", "/ws?tools=bench", dialect, "bench",
        acks=True, probe=probe, on_ready=lambda _s: None, latencies=latencies,
    )  # fmt: skip
    sub.connection_made(_Transport())  # type: ignore[arg-type]
    return sub


def _feed(sub: Subscriber, data: bytes, chunks: list[int]) -> None:
    """Deliver ``data`` split at ``chunks`` sizes, as recv() would."""
    pos = 0
    for size in chunks:
        piece = data[pos : pos + size]
        pos += size
        buffer = sub.get_buffer(len(piece))
        buffer[: len(piece)] = piece
        sub.buffer_updated(len(piece))
    assert pos >= len(data)


def _upgrade() -> bytes:
    return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"


def _events(count: int, size: int) -> bytes:
    return b"".join(_reframe(1, b"x" * size) for _ in range(count))


def test_parse_frames_keeps_the_incomplete_tail() -> None:
    data = _reframe(1, b"hello") + _reframe(1, b"y" * 300)
    frames, rest = parse_frames(data[:-10])
    assert frames == [(1, b"hello")]
    assert rest == data[7:-10]


def test_client_frames_are_masked_with_the_length() -> None:
    frame = client_frame(b"40")
    assert frame[0] == 0x81 and frame[1] == 0x82 and frame[-2:] == b"40"


def test_read_timestamp() -> None:
    assert read_timestamp(b'{"body":"@t=1764040000.123456 lorem"}') == 1764040000.123456
    assert read_timestamp(b'{"body":"no stamp"}') is None


def test_counting_is_exact_whatever_the_chunking() -> None:
    rng = random.Random(7)
    handshake = (
        _upgrade()
        + _reframe(1, b'{"type":"welcome"}')
        + _reframe(1, b'{"type":"subscribed","tool":"bench"}')
    )
    events = _events(200, 354) + _events(50, 70_000) + _events(30, 20)
    for _ in range(50):
        sub = _subscriber()
        data = handshake + events
        chunks: list[int] = []
        while sum(chunks) < len(data):
            chunks.append(rng.choice([1, 2, 3, 7, 100, 354, 356, 4096, 65536]))
        _feed(sub, data, chunks)
        assert sub.state is State.READY
        assert sub.count == 280


def test_pings_are_answered_not_counted() -> None:
    sub = _subscriber()
    _feed(sub, _upgrade() + _reframe(1, b'{"type":"subscribed"}'), [1000])
    data = _events(3, 354) + _reframe(9, b"hb") + _events(2, 354)
    _feed(sub, data, [len(data) - 1, 1])
    assert sub.count == 5
    transport = sub._transport
    assert isinstance(transport, _Transport)
    assert transport.written[-1] == client_frame(b"hb", 0xA)


def test_socketio_handshake_and_engineio_pings() -> None:
    sub = _subscriber(Dialect.SOCKETIO)
    transport = sub._transport
    assert isinstance(transport, _Transport)
    _feed(sub, _upgrade() + _reframe(1, b'0{"sid":"a","pingInterval":25000}'), [1000])
    assert transport.written[-1] == client_frame(b"40")
    _feed(sub, _reframe(1, b'40{"sid":"b"}'), [100])
    assert transport.written[-1] == client_frame(b'42["subscribe","bench"]')
    data = _reframe(1, b'42["subscribed","bench"]') + _reframe(1, b'42["story",{}]') * 4
    data += _reframe(1, b"2") + _reframe(1, b'42["story",{}]')
    _feed(sub, data, [30, 5, 1000])
    assert sub.count == 5
    assert transport.written[-1] == client_frame(b"3")


def test_probes_time_events() -> None:
    sub = _subscriber(probe=True)
    _feed(sub, _upgrade() + _reframe(1, b'{"type":"subscribed"}'), [1000])
    _feed(sub, _reframe(1, b'{"body":"@t=1.5 x"}'), [5, 100])
    assert sub.count == 1
    assert sub._latencies is not None
    arrival, read = sub._latencies[0]
    assert arrival == read > 1.0  # no kernel timestamp given: the read time stands in


class _Recorded(list[tuple[float, float]]):
    """A probe's latency list that says when something was recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded = asyncio.Event()

    def append(self, item: tuple[float, float]) -> None:
        super().append(item)
        self.recorded.set()


async def test_a_probe_times_arrival_by_the_kernel_not_by_its_read() -> None:
    """A probe whose loop is busy when its frame comes in still records the arrival time.

    A real socket pair on 127.0.0.1: a thread plays the server, and the test's own loop is
    kept from reading for 0.3 s after the event was sent, as a busy generator would be.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    go, sent, done = threading.Event(), threading.Event(), threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)  # the upgrade request
            conn.sendall(_upgrade() + _reframe(1, b'{"type":"subscribed"}'))
            go.wait(5)
            conn.sendall(_reframe(1, b'{"body":"@t=%.6f x"}' % time.time()))
            sent.set()
            done.wait(5)

    latencies = _Recorded()
    ready = asyncio.Event()
    sub = Subscriber(
        "127.0.0.1", "/ws", Dialect.PLAIN, "bench",
        acks=True, probe=True, on_ready=lambda _s: ready.set(), latencies=latencies,
    )  # fmt: skip
    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        await open_stamped(listener.getsockname()[1], sub)
        await asyncio.wait_for(ready.wait(), 5)
        go.set()
        assert sent.wait(5)
        time.sleep(0.3)  # noqa: ASYNC251 - the busy generator, on purpose: no read meanwhile
        await asyncio.wait_for(latencies.recorded.wait(), 5)
        arrival, read = latencies[0]
        assert 0 <= arrival < 0.1
        assert read >= 0.3
        assert sub.count == 1
    finally:
        done.set()
        sub.close()
        listener.close()
        server.join(5)


class _Watched(Subscriber):
    """A probe that says when its connection is gone."""

    def __init__(self) -> None:
        super().__init__(
            "127.0.0.1", "/ws", Dialect.PLAIN, "bench",
            acks=True, probe=True, on_ready=lambda _s: None, latencies=[],
        )  # fmt: skip
        self.lost = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()


async def test_a_probe_writes_everything_in_order_when_the_send_buffer_is_full() -> None:
    """Writes that a full send buffer cannot take wait and go out in order; EOF closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # accepted ones too
    first, second = b"a" * 3_000_000, b"b" * 1_000_000
    may_read, received = threading.Event(), bytearray()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            may_read.wait(5)  # not reading until the client's buffer has filled
            while not received.endswith(second):
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                received.extend(chunk)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    sub = _Watched()
    try:
        transport = await open_stamped(listener.getsockname()[1], sub)
        sock = transport.get_extra_info("socket")
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
        transport.write(first)
        assert transport._unsent, "the send buffer took 3 MB at once: nothing was tested"
        transport.write(second)
        may_read.set()
        await asyncio.wait_for(sub.lost.wait(), 10)  # the server read it all and closed
        request = received[: received.index(b"\r\n\r\n") + 4]
        assert request.startswith(b"GET /ws HTTP/1.1")
        assert received[len(request) :] == first + second
        assert sub.state is State.CLOSED
    finally:
        sub.close()
        listener.close()
        server.join(5)
