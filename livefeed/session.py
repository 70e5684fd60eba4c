"""One subscriber connection, whatever its transport: frames in, frames out.

A :class:`Session` turns client frames into hub joins and leaves and writes replies
and events to an :class:`Outbox`. The outbox is the transport's: a bounded queue
drained by a writer (ASGI), or frames written straight to the socket. Every outbox
enforces the same slow-consumer rule: past ``outbox_frames`` frames or
``outbox_bytes`` bytes unsent, the connection is closed with 4008 and nothing more
is queued, so memory stays bounded and other subscribers are not slowed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from livefeed import metrics, protocol
from livefeed.auth import Access
from livefeed.config import Settings
from livefeed.envelope import Batch, Event
from livefeed.history import IdKey, format_id, parse_id
from livefeed.hub import Hub, Writer
from livefeed.limits import FrameRateLimit
from livefeed.presence import Presence
from livefeed.protocol import CloseCode, ErrorCode, FrameError
from livefeed.tokens import Claims, TokenError, TokenExpired
from livefeed.types import is_channel, tool_list

log = logging.getLogger("livefeed.session")


class Outbox(Protocol):
    def send_event(self, event: Event) -> None:
        """Queue an event; never blocks. Over the limits it closes with 4008."""

    def send_batch(self, batch: Batch) -> None:
        """Queue a batch of live events of one channel; as :meth:`send_event`."""

    @property
    def writer(self) -> Writer | None:
        """Sends a batch's WebSocket bytes straight on the socket, while that is all
        :meth:`send_batch` would do (the connection is open and not backed up); else
        None, always for an outbox that queues."""

    def on_writer_change(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` whenever :attr:`writer` changes."""

    def send_frame(self, frame: bytes, kind: str) -> None:
        """Queue a control frame (JSON bytes) of type ``kind``; never blocks."""

    def position(self, channel: str, key: IdKey) -> None:
        """The client now holds every event of ``channel`` up to ``key`` (SSE records it
        in its cursor; WebSocket clients track ids themselves)."""

    def close(self, code: int, reason: str) -> None:
        """Drop what is queued, send a close frame, and end the connection."""

    @property
    def closed(self) -> bool: ...

    async def drain(self, frames: int, size: int) -> None:
        """Wait until fewer than ``frames`` frames and ``size`` bytes are waiting to be
        sent (or the outbox closed)."""


class QueueingOutbox:
    """An outbox that queues every frame: it never offers the hub a writer."""

    writer = None

    def on_writer_change(self, changed: Callable[[], None]) -> None:
        pass  # the writer never changes


@dataclass(slots=True)
class _Subscription:
    presence: bool  # whether presence frames were asked for
    counted: bool = False  # whether it is in the presence tally yet


class Session:
    """The transport-independent half of a connection. The transport checks each
    client frame as it arrives (:meth:`admit_frame`) and hands it over in turn
    (:meth:`handle_frame`), or starts a ready-made subscribe (SSE), and calls
    :meth:`end` when the connection is gone."""

    def __init__(
        self,
        hub: Hub,
        presence: Presence,
        access: Access,
        settings: Settings,
        outbox: Outbox,
        claims: Claims | None = None,
        transport: str = "websocket",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = secrets.token_hex(8)
        self._subscription_gauge = metrics.SUBSCRIPTIONS.labels(transport=transport)
        self._hub = hub
        self._presence = presence
        self._access = access
        self._settings = settings
        self._outbox = outbox
        self.sink = outbox.send_batch  # the hub hands live events straight to the outbox
        outbox.on_writer_change(self._writer_changed)
        self._clock = clock
        self._rate = FrameRateLimit(settings.frame_rate, settings.frame_burst, clock())
        self._subscriptions: dict[str, _Subscription] = {}
        self._claims: Claims | None = None
        self._expiry: asyncio.TimerHandle | None = None  # closes with 4001 at the token's exp
        if claims is not None:
            self._set_claims(claims)

    @property
    def handle(self) -> str | None:
        """The authenticated user's handle (presence lists it), if any."""
        return self._claims.sub if self._claims is not None else None

    # Hub and presence side -----------------------------------------------------

    @property
    def writer(self) -> Writer | None:
        return self._outbox.writer

    def _writer_changed(self) -> None:
        for tool in self._subscriptions:
            self._hub.refresh(tool, self)

    def close(self, code: int, reason: str) -> None:
        self._outbox.close(code, reason)

    def presence_frame(self, tool: str, frame: bytes) -> None:
        subscription = self._subscriptions.get(tool)
        if subscription is not None and subscription.presence:
            self._outbox.send_frame(frame, "presence")

    # Client side ---------------------------------------------------------------

    async def start(
        self,
        query_tools: str | None,
        token: str | None = None,
        subscribe: protocol.Subscribe | None = None,
    ) -> None:
        """Send ``welcome``, check ``?token=``, then subscribe to ``?tools=`` as a
        history-less subscribe would (or as ``subscribe``, when the URL said more)."""
        self._outbox.send_frame(protocol.welcome(self.id, self._settings.heartbeat), "welcome")
        if token:
            self.authenticate(token, None)
            if self._outbox.closed:  # an expired token closed the connection
                return
        if subscribe is None and query_tools:
            subscribe = protocol.Subscribe(tool_list(query_tools))
        if subscribe is not None:
            await self.subscribe(subscribe)

    def admit_frame(self, text: str) -> bool:
        """The size and rate rules, checked as a frame arrives (before it waits behind
        others): False when the frame is refused (answered, or the connection closed)."""
        if len(text) * 4 > self._settings.max_frame_bytes and (
            len(text.encode()) > self._settings.max_frame_bytes
        ):
            self.close(CloseCode.TOO_LARGE, "frame too large")
            return False
        return self._within_rate()

    def _within_rate(self) -> bool:
        """The frame rate rule, for every client frame, text or binary."""
        verdict = self._rate.check(self._clock())
        if verdict == "ok":
            return True
        if verdict == "reject":
            self._error(ErrorCode.RATE_LIMITED, "too many frames; slow down")
        elif verdict == "close":
            self.close(CloseCode.TOO_MANY_REQUESTS, "too many frames")
        return False

    async def handle_frame(self, text: str) -> None:
        """Parse and act on an admitted frame, in order with the connection's others."""
        try:
            frame = protocol.parse_client_frame(text)
        except FrameError as exc:
            self._error(exc.code, exc.message, exc.ref)
            return
        if isinstance(frame, protocol.Subscribe):
            await self.subscribe(frame)
        elif isinstance(frame, protocol.Unsubscribe):
            self._unsubscribe(frame)
        elif isinstance(frame, protocol.Ping):
            self._pong(frame)
        elif self.authenticate(frame.token, frame.ref):
            assert self._claims is not None
            self._outbox.send_frame(
                protocol.authenticated(self._claims.sub, self._claims.exp, frame.ref),
                "authenticated",
            )

    def answer_if_ping(self, text: str) -> bool:
        """Answer ``text`` now if it is a ping (out of turn: the transport decides when);
        False, and nothing sent, for any other frame."""
        try:
            frame = protocol.parse_client_frame(text)
        except FrameError:
            return False
        if not isinstance(frame, protocol.Ping):
            return False
        self._pong(frame)
        return True

    def _pong(self, ping: protocol.Ping) -> None:
        self._outbox.send_frame(protocol.pong(ping.ref), "pong")

    # Tokens --------------------------------------------------------------------

    def authenticate(self, token: str, ref: Any) -> bool:
        """Adopt a token's claims. An expired token closes with 4001; an invalid one
        gets ``unauthorized`` and changes nothing."""
        try:
            claims = self._access.verify(token, time.time())
        except TokenExpired:
            self.close(CloseCode.TOKEN_EXPIRED, "token expired")
            return False
        except TokenError as exc:
            self._error(ErrorCode.UNAUTHORIZED, str(exc), ref)
            return False
        self._set_claims(claims)
        for tool in [t for t in self._subscriptions if not self._access.allows(claims, t)]:
            self._drop(tool)
            self._error(ErrorCode.FORBIDDEN, "the new token does not allow this tool", ref, tool)
        return True

    def _set_claims(self, claims: Claims) -> None:
        old_handle = self.handle
        self._claims = claims
        if claims.sub != old_handle:  # presence lists the new handle from now on
            for tool, subscription in self._subscriptions.items():
                if subscription.counted:
                    self._presence.leave(tool, old_handle)
                    self._presence.join(tool, claims.sub)
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, claims.exp - time.time())
        self._expiry = asyncio.get_running_loop().call_later(
            delay, self.close, CloseCode.TOKEN_EXPIRED, "token expired"
        )

    def handle_binary(self) -> None:
        """Refuse a binary frame (uvicorn has already held it to the size limit). It
        counts against the frame rate: each costs the server an error frame."""
        if self._within_rate():
            self._error(ErrorCode.BAD_FRAME, "frames are JSON text, not binary")

    def end(self) -> None:
        """The connection is gone: leave every channel and the presence tally."""
        if self._expiry is not None:
            self._expiry.cancel()
        for name in list(self._subscriptions):
            self._drop(name)

    # Frames --------------------------------------------------------------------

    def _error(
        self, code: ErrorCode, message: str, ref: Any = None, tool: str | None = None
    ) -> None:
        self._outbox.send_frame(protocol.error(code, message, ref, tool), "error")

    def _admit(self, tool: str, ref: Any, taken: int) -> bool:
        """Whether ``tool`` may be subscribed; answers the client when it may not."""
        if not is_channel(tool):
            self._error(ErrorCode.INVALID_TOOL, f"not a tool name: {tool[:70]!r}", ref, tool[:70])
            return False
        if not self._access.allows(self._claims, tool):
            self._error(
                ErrorCode.FORBIDDEN,
                "a private tool: subscribe with a token that allows it",
                ref,
                tool,
            )
            return False
        if taken >= self._settings.max_subscriptions:
            self._error(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self._settings.max_subscriptions} subscriptions per connection",
                ref,
                tool,
            )
            return False
        return True

    async def subscribe(self, frame: protocol.Subscribe) -> None:
        admitted: list[str] = []
        for tool in frame.tools:
            if tool in self._subscriptions:
                await self._resubscribe(tool, frame)
            elif not self._admit(tool, frame.ref, len(self._subscriptions) + len(admitted)):
                continue
            elif tool in frame.bad_since:  # a cursor that is not an id: this tool alone
                self._error(ErrorCode.BAD_FRAME, frame.bad_since[tool], frame.ref, tool)
            else:
                admitted.append(tool)
        for tool in admitted:
            if self._outbox.closed:
                return
            self._subscriptions[tool] = _Subscription(frame.presence)
            await self._join(tool, frame)

    async def _resubscribe(self, tool: str, frame: protocol.Subscribe) -> None:
        """Already subscribed: confirm, and start presence frames if now asked for."""
        subscription = self._subscriptions[tool]
        starts_watching = frame.presence and not subscription.presence
        if starts_watching:
            subscription.presence = True
        count, _ = await self._presence.state(tool)
        # No replay on a live subscription; with a cursor, "recovered" says, as the
        # contract defines it, whether kept history still covers it (a malformed one
        # is ignored: the subscription stays as it is).
        since = parse_id(frame.since[tool]) if tool in frame.since else None
        recovered = None if since is None else await self._hub.covers(tool, since)
        self._outbox.send_frame(
            protocol.subscribed(tool, frame.ref, count, recovered), "subscribed"
        )
        if starts_watching:
            self._watch(tool, subscription)

    async def _join(self, tool: str, frame: protocol.Subscribe) -> None:
        since = parse_id(frame.since[tool]) if tool in frame.since else None
        page = await self._hub.join(tool, self, frame.history, since)
        subscription = self._subscriptions.get(tool)
        if subscription is None:  # the connection ended while joining: end() has left
            return
        self._presence.join(tool, self.handle)
        self._subscription_gauge.inc()
        subscription.counted = True
        count, _ = await self._presence.state(tool)
        recovered = page.recovered if since else None
        self._outbox.send_frame(
            protocol.subscribed(tool, frame.ref, count, recovered), "subscribed"
        )
        if subscription.presence:
            self._watch(tool, subscription)
        # The position the client holds: its cursor, unless history could not honour it.
        last: IdKey | None = since if page.recovered is not False else None
        # Paced to half the slow-consumer limits, in frames and in bytes: a replay of
        # large events must not pile up past the byte limit before any of it is sent.
        frames, size = self._settings.outbox_frames // 2, self._settings.outbox_bytes // 2
        for event in page.events:
            self._outbox.send_event(event)
            last = event.key
            await self._outbox.drain(frames, size)
        if tool not in self._subscriptions:  # closed while replaying
            return
        buffered, position = await self._hub.go_live(tool, self, last)
        for event in buffered:
            self._outbox.send_event(event)
        if position is not None:  # (0, 0): nothing published yet; resume from the start
            self._outbox.position(tool, position)
            if frame.position:
                self._outbox.send_frame(protocol.position(tool, format_id(position)), "position")

    def _unsubscribe(self, frame: protocol.Unsubscribe) -> None:
        for tool in frame.tools:
            if not is_channel(tool):
                self._error(
                    ErrorCode.INVALID_TOOL, f"not a tool name: {tool[:70]!r}", frame.ref, tool[:70]
                )
                continue
            self._drop(tool)
            self._outbox.send_frame(protocol.unsubscribed(tool, frame.ref), "unsubscribed")

    def _watch(self, tool: str, subscription: _Subscription) -> None:
        """Start presence frames, once ``subscribed`` went out: a push may come at any
        await, and the first frame of a tool must be ``subscribed``. Not if the
        subscription ended meanwhile (its ``_drop`` had nothing to unwatch)."""
        if self._subscriptions.get(tool) is subscription:
            self._presence.watch(tool, self)

    def _drop(self, tool: str) -> None:
        subscription = self._subscriptions.pop(tool, None)
        if subscription is None:
            return
        self._hub.leave(tool, self)
        if subscription.counted:
            self._presence.leave(tool, self.handle)
            self._subscription_gauge.dec()
        if subscription.presence:
            self._presence.unwatch(tool, self)


class SessionSet:
    """The open sessions of a process, so shutdown can close them all and wait."""

    def __init__(self) -> None:
        self._sessions: set[Session] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions))

    def add(self, session: Session) -> None:
        self._sessions.add(session)
        self._empty.clear()

    def discard(self, session: Session) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            self._empty.set()

    async def wait_empty(self) -> None:
        await self._empty.wait()


@dataclass(frozen=True)
class Services:
    """What a transport needs to run sessions, built once by the app."""

    hub: Hub
    presence: Presence
    access: Access
    settings: Settings
    sessions: SessionSet

    def session(self, outbox: Outbox, transport: str, claims: Claims | None = None) -> Session:
        return Session(
            self.hub, self.presence, self.access, self.settings, outbox, claims, transport
        )


def count_close(code: int) -> None:
    """Count a connection the server closes (every code but a plain 1000)."""
    if code != CloseCode.NORMAL:
        metrics.CLOSED.labels(reason=protocol.close_reason(code)).inc()
