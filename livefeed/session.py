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

from livefeed import protocol
from livefeed.config import Settings
from livefeed.envelope import Event
from livefeed.history import IdKey, parse_id
from livefeed.hub import Hub
from livefeed.limits import FrameRateLimit
from livefeed.protocol import CloseCode, ErrorCode, FrameError
from livefeed.types import is_channel

log = logging.getLogger("livefeed.session")

REPLAY_CHUNK = 100  # replayed events queued before waiting for the outbox to drain


class Outbox(Protocol):
    def send_event(self, event: Event) -> None:
        """Queue an event; never blocks. Over the limits it closes with 4008."""

    def send_frame(self, frame: bytes) -> None:
        """Queue a control frame (JSON bytes); never blocks."""

    def close(self, code: int, reason: str) -> None:
        """Drop what is queued, send a close frame, and end the connection."""

    @property
    def closed(self) -> bool: ...

    async def drain(self, below: int) -> None:
        """Wait until fewer than ``below`` frames are queued (or the outbox closed)."""


@dataclass(slots=True)
class _Subscription:
    presence: bool  # whether presence frames were asked for


class Session:
    def __init__(
        self,
        hub: Hub,
        settings: Settings,
        outbox: Outbox,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = secrets.token_hex(8)
        self._hub = hub
        self._settings = settings
        self._outbox = outbox
        self._clock = clock
        self._rate = FrameRateLimit(settings.frame_rate, settings.frame_burst, clock())
        self._subscriptions: dict[str, _Subscription] = {}

    # Hub side ------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        self._outbox.send_event(event)

    def close(self, code: int, reason: str) -> None:
        self._outbox.close(code, reason)

    # Client side ---------------------------------------------------------------

    async def start(self, query_tools: str | None) -> None:
        """Send ``welcome``, then subscribe to ``?tools=`` as a history-less subscribe."""
        self._outbox.send_frame(protocol.welcome(self.id, self._settings.heartbeat))
        if query_tools:
            tools = tuple(dict.fromkeys(t.strip() for t in query_tools.split(",") if t.strip()))
            await self._subscribe(protocol.Subscribe(tools))

    async def handle_text(self, text: str) -> None:
        """Handle one client text frame. Never raises for bad input."""
        if len(text) * 4 > self._settings.max_frame_bytes and (
            len(text.encode()) > self._settings.max_frame_bytes
        ):
            self.close(CloseCode.TOO_LARGE, "frame too large")
            return
        verdict = self._rate.check(self._clock())
        if verdict != "ok":
            if verdict == "reject":
                self._error(ErrorCode.RATE_LIMITED, "too many frames; slow down")
            elif verdict == "close":
                self.close(CloseCode.TOO_MANY_REQUESTS, "too many frames")
            return
        try:
            frame = protocol.parse_client_frame(text)
        except FrameError as exc:
            self._error(exc.code, exc.message, exc.ref)
            return
        if isinstance(frame, protocol.Subscribe):
            await self._subscribe(frame)
        elif isinstance(frame, protocol.Unsubscribe):
            self._unsubscribe(frame)
        elif isinstance(frame, protocol.Ping):
            self._outbox.send_frame(protocol.pong(frame.ref))
        else:
            self._error(
                ErrorCode.UNAUTHORIZED,
                "this server verifies no tokens (LIVEFEED_SECRET unset)",
                frame.ref,
            )

    def handle_binary(self) -> None:
        self._error(ErrorCode.BAD_FRAME, "frames are JSON text, not binary")

    def end(self) -> None:
        """The connection is gone: leave every channel."""
        for name in self._subscriptions:
            self._hub.leave(name, self)
        self._subscriptions.clear()

    # Frames --------------------------------------------------------------------

    def _error(
        self, code: ErrorCode, message: str, ref: Any = None, tool: str | None = None
    ) -> None:
        self._outbox.send_frame(protocol.error(code, message, ref, tool))

    def _admit(self, tool: str, ref: Any, taken: int) -> bool:
        """Whether ``tool`` may be subscribed; answers the client when it may not."""
        if not is_channel(tool):
            self._error(ErrorCode.INVALID_TOOL, f"not a tool name: {tool[:70]!r}", ref, tool[:70])
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

    async def _subscribe(self, frame: protocol.Subscribe) -> None:
        admitted: list[str] = []
        for tool in frame.tools:
            if tool in self._subscriptions:
                self._outbox.send_frame(protocol.subscribed(tool, frame.ref, 0, None))
            elif self._admit(tool, frame.ref, len(self._subscriptions) + len(admitted)):
                admitted.append(tool)
        for tool in admitted:
            if self._outbox.closed:
                return
            self._subscriptions[tool] = _Subscription(frame.presence)
            await self._join(tool, frame)

    async def _join(self, tool: str, frame: protocol.Subscribe) -> None:
        since = parse_id(frame.since[tool]) if tool in frame.since else None
        page = await self._hub.join(tool, self, frame.history, since)
        self._outbox.send_frame(
            protocol.subscribed(tool, frame.ref, 0, page.recovered if since else None)
        )
        # The position the client holds: its cursor, unless history could not honour it.
        last: IdKey | None = since if page.recovered is not False else None
        for start in range(0, len(page.events), REPLAY_CHUNK):
            for event in page.events[start : start + REPLAY_CHUNK]:
                self._outbox.send_event(event)
                last = event.key
            await self._outbox.drain(self._settings.outbox_frames // 2)
        if tool not in self._subscriptions:  # closed while replaying
            return
        for event in await self._hub.go_live(tool, self, last):
            self._outbox.send_event(event)

    def _unsubscribe(self, frame: protocol.Unsubscribe) -> None:
        for tool in frame.tools:
            if not is_channel(tool):
                self._error(
                    ErrorCode.INVALID_TOOL, f"not a tool name: {tool[:70]!r}", frame.ref, tool[:70]
                )
                continue
            if self._subscriptions.pop(tool, None) is not None:
                self._hub.leave(tool, self)
            self._outbox.send_frame(protocol.unsubscribed(tool, frame.ref))


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
