"""Raw Redis connections, parsed in the event loop's callbacks: the live link and the
command link.

redis-py's ``PubSub`` reads one message per ``await`` through several layers (a health
check, a timeout context, a dict per message). On a busy process that is paid for
every event, and with events spread over many tools it was a good share of the cost
per delivery. Here whatever the socket delivered is fed to hiredis and every complete
reply is handed on at once, synchronously: a burst of events is one callback and
lands in one pass of the hub.

Both links speak RESP2 and authenticate (``AUTH``) and pick the database (``SELECT``)
from the same URL as redis-py. :class:`LiveLink` is the pub/sub connection
(``SUBSCRIBE``, ``UNSUBSCRIBE``, ``PING``); its liveness is the caller's job: it pings
when the link has been quiet and gives up when no answer comes (see ``last_traffic``).
:class:`CommandLink` carries the publish script: a call writes its command at once and
its reply comes back in order. redis-py's command path (a pooled connection, a
staleness check, packing, a timeout context per read) took 0.3 ms of a cold publish
on a 2-core VM, half of the publisher's share of an event's latency. redis-py still
does everything else (history, presence, settling).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url


class LinkError(ConnectionError):
    """A link failed: refused, closed, or Redis answered with an error."""


class NotSent(LinkError):
    """A command was not sent: the link had ended, or was ending."""


@dataclass(frozen=True)
class Endpoint:
    """Where the live link connects, read from the same URL as the command client."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket
    username: str | None = None
    password: str | None = None
    db: int = 0
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
            db=int(options.get("db", 0)),
            tls=tls,
        )


def command(*args: bytes | str | int) -> bytes:
    """One command in RESP: an array of bulk strings (hiredis packs it in C: 2.6 us for
    the publish script's call against 6.3 in Python)."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # (its stub says 1-tuple)
    return packed


class RedisLink(asyncio.Protocol):
    """One raw connection: connecting, the handshake, parsing, and how it ends.
    ``closed`` completes with the :class:`LinkError` that ended the link."""

    name = "link"  # in errors and logs

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Future[None] | None = None  # while AUTH/SELECT are answered
        self._handshake_replies = 0
        # Kept: asyncio.get_running_loop() costs a getpid() system call on Python 3.11,
        # and data_received needs the time on every read.
        self._loop = loop = asyncio.get_running_loop()
        # A result, not an exception: nobody may be waiting when the link dies.
        self.closed: asyncio.Future[LinkError] = loop.create_future()
        self.last_traffic = loop.time()

    async def hand_shake(self, endpoint: Endpoint) -> None:
        """Authenticate and select the database, as the URL says."""
        if self.closed.done():  # lost while connecting: nothing would answer
            raise self.closed.result()
        commands = []
        if endpoint.password is not None:
            user = (endpoint.username,) if endpoint.username else ()
            commands.append(command("AUTH", *user, endpoint.password))
        if endpoint.db:
            commands.append(command("SELECT", endpoint.db))
        if not commands:
            return
        self._handshake = asyncio.get_running_loop().create_future()
        self._handshake_replies = len(commands)
        self._send(b"".join(commands))
        try:
            await self._handshake
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the link now: ``closed`` is done when this returns."""
        self._fail(LinkError(f"the {self.name} was closed"))

    def _send(self, data: bytes) -> bool:
        """Write ``data``; False, having written nothing, if the link is ending."""
        if self.closed.done() or self._transport is None or self._transport.is_closing():
            return False
        self._transport.write(data)
        return True

    def _reply(self, reply: Any) -> None:
        """One reply after the handshake, in the order Redis sent them."""
        raise NotImplementedError

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.last_traffic = self._loop.time()
        try:
            self._reader.feed(data)
            while (reply := self._reader.gets()) is not False:
                if self._handshake_replies:
                    self._handshake_reply(reply)
                else:
                    self._reply(reply)
        except hiredis.ProtocolError as exc:
            self._fail(LinkError(f"unreadable reply from Redis: {exc}"))

    def _handshake_reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            self._fail(LinkError(f"Redis refused the {self.name}: {reply}"))
            return
        self._handshake_replies -= 1
        done = self._handshake
        if not self._handshake_replies and done is not None and not done.done():
            done.set_result(None)

    def _fail(self, error: LinkError) -> None:
        self._handshake_replies = 0
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(error)
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        reason = f": {exc}" if exc else ""
        self._fail(LinkError(f"Redis closed the {self.name}{reason}"))


_Link = TypeVar("_Link", bound=RedisLink)


async def open_link(endpoint: Endpoint, within: float, factory: Callable[[], _Link]) -> _Link:
    """Connect and hand-shake within ``within`` seconds, or raise :class:`LinkError`."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            if endpoint.path is not None:
                _, link = await loop.create_unix_connection(factory, endpoint.path)
            else:
                _, link = await loop.create_connection(
                    factory, endpoint.host, endpoint.port, ssl=endpoint.tls
                )
            await link.hand_shake(endpoint)
            if link.closed.done():  # lost right after the handshake (or with none)
                raise link.closed.result()
    except LinkError:
        raise
    except TimeoutError:
        raise LinkError(f"no connection to Redis within {within:g} s") from None
    except OSError as exc:
        raise LinkError(f"cannot connect to Redis: {exc}") from None
    return link


class LiveLink(RedisLink):
    """One pub/sub connection. ``on_message(channel, data)`` gets each message,
    ``on_subscribed(channel)`` each confirmed subscription, in the order Redis sent them."""

    name = "live link"

    def __init__(
        self,
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[bytes], None],
    ) -> None:
        super().__init__()
        self._on_message = on_message
        self._on_subscribed = on_subscribed

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        on_message: Callable[[bytes, bytes], None],
        on_subscribed: Callable[[bytes], None],
        within: float,
    ) -> LiveLink:
        """Connect and authenticate within ``within`` seconds, or raise :class:`LinkError`."""
        return await open_link(endpoint, within, lambda: cls(on_message, on_subscribed))

    def subscribe(self, *channels: bytes | str) -> None:
        if channels:
            self._send(command("SUBSCRIBE", *channels))

    def unsubscribe(self, *channels: bytes | str) -> None:
        if channels:
            self._send(command("UNSUBSCRIBE", *channels))

    def ping(self) -> None:
        self._send(command("PING"))

    def _reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            self._fail(LinkError(f"Redis refused the {self.name}: {reply}"))
        elif isinstance(reply, list) and len(reply) == 3:
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1], reply[2])
            elif kind == b"subscribe":
                self._on_subscribed(reply[1])
        # anything else (pong, unsubscribe) only counts as traffic


class CommandLink(RedisLink):
    """Commands on one connection, pipelined: :meth:`call` writes at once and its future
    gets the reply (an error reply as a ``hiredis.ReplyError`` value), in call order. A
    caller that stops waiting leaves its future behind; its reply is read and dropped,
    so the link stays in step. When the link ends, every waiting call fails with the
    :class:`LinkError`: each command was sent and its reply is lost.

    A link whose reply is late may be dead without a word (a peer gone, no reset), or
    Redis may be busy: :meth:`retire` it, and it takes no new calls but keeps reading
    for the calls still waiting on it, and closes once none is."""

    name = "command link"

    def __init__(self) -> None:
        super().__init__()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self.retired = False

    @classmethod
    async def open(cls, endpoint: Endpoint, within: float) -> CommandLink:
        """Connect and hand-shake within ``within`` seconds, or raise :class:`LinkError`."""
        return await open_link(endpoint, within, cls)

    def call(self, packed: bytes) -> asyncio.Future[Any]:
        """Send one command (see :func:`command`); raises :class:`NotSent`, having sent
        nothing, if the link has ended or is retired."""
        if self.retired or not self._send(packed):
            reason = self.closed.result() if self.closed.done() else "retired"
            raise NotSent(f"not sent on the {self.name}: {reason}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        return future

    @property
    def usable(self) -> bool:
        """Open and not retired: it takes new calls."""
        return not self.retired and not self.closed.done()

    def retire(self) -> None:
        """Take no new calls; close once no call waits (their replies then go nowhere),
        whether each waiting call is answered, times out or is cancelled."""
        self.retired = True
        waiting = [future for future in self._waiting if not future.done()]
        for future in waiting:
            future.add_done_callback(self._close_when_idle)
        if not waiting:
            self.close()

    def _close_when_idle(self, _: asyncio.Future[Any]) -> None:
        if all(future.done() for future in self._waiting):
            self.close()

    def _reply(self, reply: Any) -> None:
        if not self._waiting:
            self._fail(LinkError(f"Redis sent a reply nobody asked for: {reply!r:.100}"))
            return
        future = self._waiting.popleft()
        if not future.done():
            future.set_result(reply)

    def _fail(self, error: LinkError) -> None:
        super()._fail(error)
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
