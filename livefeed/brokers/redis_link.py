"""The live link: one raw Redis pub/sub connection, parsed in the event loop's callbacks.

redis-py's ``PubSub`` reads one message per ``await`` through several layers (a health
check, a timeout context, a dict per message). On a busy process that is paid for
every event, and with events spread over many tools it was a good share of the cost
per delivery. Here whatever the socket delivered is fed to hiredis and every complete
message is handed on at once, synchronously: a burst of events is one callback and
lands in one pass of the hub. redis-py still does everything else (commands, scripts).

The link speaks RESP2 and only what pub/sub needs: ``AUTH`` (from the URL),
``SUBSCRIBE``, ``UNSUBSCRIBE`` and ``PING``. Liveness is the caller's job: it pings
when the link has been quiet and gives up when no answer comes (see ``last_traffic``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url


class LinkError(ConnectionError):
    """The live link failed: refused, closed, or Redis answered with an error."""


@dataclass(frozen=True)
class Endpoint:
    """Where the live link connects, read from the same URL as the command client."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        options: dict[str, Any] = dict(parse_url(url))
        tls = None
        if options.get("connection_class") is SSLConnection:
            tls = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
            if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "0"):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        return cls(
            host=options.get("host", "localhost"),
            port=int(options.get("port", 6379)),
            path=options.get("path"),
            username=options.get("username"),
            password=options.get("password"),
            tls=tls,
        )


def command(*args: bytes | str) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class LiveLink(asyncio.Protocol):
    """One pub/sub connection. ``on_message(channel, data)`` gets each message,
    ``on_subscribed(channel)`` each confirmed subscription, in the order Redis sent them.
    ``closed`` completes with the :class:`LinkError` that ended the link."""

    def __init__(
        self,
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[bytes], None],
    ) -> None:
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Future[None] | None = None  # the AUTH reply, if sent
        loop = asyncio.get_running_loop()
        # A result, not an exception: nobody may be waiting when the link dies.
        self.closed: asyncio.Future[LinkError] = loop.create_future()
        self.last_traffic = loop.time()

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[bytes], None],
        within: float,
    ) -> LiveLink:
        """Connect and authenticate within ``within`` seconds, or raise :class:`LinkError`."""
        loop = asyncio.get_running_loop()

        def factory() -> LiveLink:
            return cls(on_message, on_subscribed)

        try:
            async with asyncio.timeout(within):
                if endpoint.path is not None:
                    _, link = await loop.create_unix_connection(factory, endpoint.path)
                else:
                    _, link = await loop.create_connection(
                        factory, endpoint.host, endpoint.port, ssl=endpoint.tls
                    )
                if endpoint.password is not None:
                    await link._authenticate(endpoint.username, endpoint.password)
        except LinkError:
            raise
        except TimeoutError:
            raise LinkError(f"no connection to Redis within {within:g} s") from None
        except OSError as exc:
            raise LinkError(f"cannot connect to Redis: {exc}") from None
        return link

    async def _authenticate(self, username: str | None, password: str) -> None:
        self._handshake = asyncio.get_running_loop().create_future()
        args = ("AUTH", username, password) if username else ("AUTH", password)
        self._send(command(*args))
        try:
            await self._handshake
        except BaseException:
            self.close()
            raise

    def subscribe(self, *channels: bytes | str) -> None:
        if channels:
            self._send(command("SUBSCRIBE", *channels))

    def unsubscribe(self, *channels: bytes | str) -> None:
        if channels:
            self._send(command("UNSUBSCRIBE", *channels))

    def ping(self) -> None:
        self._send(command("PING"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.last_traffic = asyncio.get_running_loop().time()
        try:
            self._reader.feed(data)
            while (reply := self._reader.gets()) is not False:
                self._dispatch(reply)
        except hiredis.ProtocolError as exc:
            self._fail(LinkError(f"unreadable reply from Redis: {exc}"))

    def _dispatch(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            self._fail(LinkError(f"Redis refused the live link: {reply}"))
        elif self._handshake is not None and not self._handshake.done():
            self._handshake.set_result(None)  # AUTH answered OK
        elif isinstance(reply, list) and len(reply) == 3:
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1], reply[2])
            elif kind == b"subscribe":
                self._on_subscribed(reply[1])
        # anything else (pong, unsubscribe) only counts as traffic

    def _fail(self, error: LinkError) -> None:
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(error)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        reason = f": {exc}" if exc else ""
        self._fail(LinkError(f"Redis closed the live link{reason}"))
