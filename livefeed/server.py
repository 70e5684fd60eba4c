"""Run the app on uvicorn the way ``livefeed serve`` (and the Procfile) does.

A small :class:`uvicorn.Server` subclass puts livefeed's drain first in shutdown:
listeners close, every connection gets close code 1001 (plain uvicorn would send
1012), and only then does uvicorn wind down the rest, within 10 s in all.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from livefeed import logs
from livefeed.app import Runtime, create_app
from livefeed.config import Settings
from livefeed.transports.direct import DirectWebSocketProtocol, raise_descriptor_limit
from livefeed.transports.sse import TRANSPORT_EXTENSION

log = logging.getLogger("uvicorn.error")  # where uvicorn reports listening and failing

DRAIN_SECONDS = 4.0  # waiting for clients to answer our 1001 close
GRACE_SECONDS = 4  # then uvicorn's own wait for connections and tasks
MAX_HEAD_BYTES = 64 * 1024  # a request's line and headers (nginx allows 4 x 8 KiB)
HEAD_TIMEOUT = 10.0  # seconds a request's line and headers may take to arrive
# Header lines per request (Apache's LimitRequestFields). uvicorn keeps each as a tuple of
# two bytes objects, ~150 bytes of memory whatever its size on the wire: 64 KiB of empty
# headers ("a:\r\n") held ~4 MB per connection.
MAX_HEAD_FIELDS = 100


class HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops, and uvicorn answers 400 and
    closes the connection."""


class _HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, minus the reference cycle it leaves behind each
    WebSocket upgrade: its parser holds bound methods of the protocol, and uvicorn
    drops the parser only in ``connection_lost``, which an upgraded connection's HTTP
    protocol never gets (the WebSocket protocol takes the transport).

    Each request's scope also carries the connection's transport, so that a stream
    that has ended can cut a client that no longer reads (see ``transports/sse``).

    And a request's head is bounded, in size and in time: uvicorn keeps every header
    it is sent and waits for the end of the head for ever, so a client could hold a
    socket with a head that never ends, and grow the process's memory with it (50 MB
    of headers on one connection to /ws took ~57 MB)."""

    _head_bytes = 0
    _head_fields = 0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge(f"request head over {MAX_HEAD_BYTES} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {TRANSPORT_EXTENSION: self.transport}  # type: ignore[dict-item]
        self._head_bytes = 0
        self._head_fields = 0
        self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > MAX_HEAD_FIELDS:
            raise HeadTooLarge(f"request head of over {MAX_HEAD_FIELDS} header lines")
        self._count_head(len(name) + len(value) + 4)  # as on the wire: ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self._runtime = runtime

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting before we start closing connections
        await self._runtime.drain(DRAIN_SECONDS)
        await super().shutdown(sockets)


def build(settings: Settings, configure_logging: bool = True) -> _Server:
    """The uvicorn server ``livefeed serve`` runs (logging set up unless told not to,
    as when a test runs it inside its own process)."""
    log_config = (
        logs.configure(settings.log_level, settings.log_json) if configure_logging else None
    )

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=_HttpProtocol,
        ws=DirectWebSocketProtocol,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.heartbeat,
        ws_ping_timeout=2 * settings.heartbeat,
        # Shared frame bytes go to every subscriber; per-connection compression would
        # re-encode each one. Browsers offer permessage-deflate; we decline it.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
        log_config=log_config,
        access_log=True,  # with tokens redacted, see livefeed.logs
        server_header=False,
    )
    return _Server(config, app.state.runtime)


def run(settings: Settings) -> int:
    # A young-generation collection every 700 allocations (the default) walks the
    # connections' objects over and over: Python's thresholds cost 15-20 % more CPU
    # per delivery in the benchmark. Raised, full collections all but stop, which is
    # safe because a closed connection is freed by reference counting: the cycles it
    # would leave are broken when it closes (tests/integration/test_connection_memory.py).
    # Start-up objects are kept out of every collection (gc.freeze).
    gc.set_threshold(50_000, 20, 20)
    gc.collect()
    gc.freeze()
    server = build(settings)  # (configures logging)
    before, after = raise_descriptor_limit()
    if after != before:
        log.info("open-file limit raised from %d to %d (the hard limit)", before, after)
    try:
        listeners = bind(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 3  # uvicorn's start-up failure status
    server.run(sockets=listeners)  # on uvloop when installed (a dependency on Linux)
    return 0 if server.started else 1


def bind(host: str, port: int) -> list[socket.socket]:
    """The listening sockets for ``host`` (every address it resolves to), bound here
    rather than by uvicorn: uvloop resolves a host and port through libuv's thread
    pool, whose 4 threads then live as long as the process, and in a process with
    threads every system call's file lookup takes the kernel's slow path (atomic
    reference counts; 4 % of the fan-out's CPU in `fdget`). This resolves in the
    main thread, at start-up, and binds the way asyncio's ``create_server`` does.
    (A Redis URL with a host name, not an address, starts the pool all the same.)"""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind((address[0], port, *address[2:]))
            port = listener.getsockname()[1]  # port 0: every address on the port given first
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    for listener in listeners:
        address, bound = listener.getsockname()[:2]
        shown = f"[{address}]" if listener.family == socket.AF_INET6 else address
        log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, bound)
    return listeners
