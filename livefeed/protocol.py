"""WebSocket frames: parse and check what clients send, encode what the server sends.

Pure. One table of error codes and one of close codes, each close code with what a
client should do; docs/protocol.md renders the same tables.

Client frames are checked strictly: an unknown field is a ``bad_frame`` error naming
it, because a silently ignored typo (``"histroy": 20``) is a surprise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import orjson

from livefeed.history import parse_id
from livefeed.types import EventId

MAX_HISTORY = 100
MAX_REF_LENGTH = 64


class ErrorCode(StrEnum):
    """``code`` of an ``error`` frame. The connection stays open after each."""

    BAD_FRAME = "bad_frame"  # not JSON, not an object, or a field of the wrong shape
    UNKNOWN_TYPE = "unknown_type"  # "type" is not one the server knows
    INVALID_TOOL = "invalid_tool"  # a tool name that is not a slug (or "*")
    FORBIDDEN = "forbidden"  # a private tool and no token that allows it
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"  # over the per-connection limit
    RATE_LIMITED = "rate_limited"  # frame dropped: over the frame rate
    UNAUTHORIZED = "unauthorized"  # the token is malformed, badly signed, or no secret is set


class CloseCode(IntEnum):
    """Close codes the server uses; :data:`CLOSE_ADVICE` says what a client does."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    TOO_LARGE = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TOKEN_EXPIRED = 4001
    FORBIDDEN = 4003
    SLOW_CONSUMER = 4008
    TOO_MANY_REQUESTS = 4029


CLOSE_ADVICE: dict[CloseCode, tuple[str, str]] = {
    CloseCode.NORMAL: ("resume", "closed normally (never by this server; a proxy may)"),
    CloseCode.GOING_AWAY: ("resume", "server shutting down or restarting"),
    CloseCode.POLICY_VIOLATION: ("no", "policy violation"),
    CloseCode.TOO_LARGE: ("no", "client frame too large"),
    CloseCode.INTERNAL_ERROR: ("resume", "internal error on this connection"),
    CloseCode.SERVICE_RESTART: ("resume", "server restarting (sent by plain uvicorn)"),
    CloseCode.TOKEN_EXPIRED: ("new token", "token expired: reconnect with a fresh one"),
    CloseCode.FORBIDDEN: ("no", "forbidden: do not reconnect"),
    CloseCode.SLOW_CONSUMER: ("resume", "slow consumer: fell too far behind"),
    CloseCode.TOO_MANY_REQUESTS: ("later", "too many requests: reconnect later"),
}


class FrameError(Exception):
    """A client frame that gets an ``error`` reply; the connection stays open."""

    def __init__(self, code: ErrorCode, message: str, ref: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


@dataclass(frozen=True, slots=True)
class Subscribe:
    tools: tuple[str, ...]  # as sent; each is checked (slug, access) one by one
    history: int = 0
    since: dict[str, EventId] = field(default_factory=dict)
    presence: bool = False
    ref: Any = None
    # Tools whose cursor is not an event id, with why: each gets its own error (with
    # "tool") and is not subscribed; the frame's other tools are.
    bad_since: dict[str, str] = field(default_factory=dict)
    # Extension: also send a `position` frame once each tool is live (as SSE's
    # `event: position`), the id a resume can start from though no event came yet.
    position: bool = False


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    tools: tuple[str, ...]
    ref: Any = None


@dataclass(frozen=True, slots=True)
class Auth:
    token: str
    ref: Any = None


@dataclass(frozen=True, slots=True)
class Ping:
    ref: Any = None


ClientFrame = Subscribe | Unsubscribe | Auth | Ping

_FIELDS: dict[str, frozenset[str]] = {
    "subscribe": frozenset({"type", "ref", "tools", "history", "since", "presence", "position"}),
    "unsubscribe": frozenset({"type", "ref", "tools"}),
    "auth": frozenset({"type", "ref", "token"}),
    "ping": frozenset({"type", "ref"}),
}


def _bad(message: str, ref: Any) -> FrameError:
    return FrameError(ErrorCode.BAD_FRAME, message, ref)


def _tools(frame: dict[str, Any], ref: Any) -> tuple[str, ...]:
    tools = frame.get("tools")
    if not isinstance(tools, list) or not tools:
        raise _bad("tools: expected a non-empty list of tool names", ref)
    if not all(isinstance(tool, str) for tool in tools):
        raise _bad("tools: every entry must be a string", ref)
    return tuple(dict.fromkeys(tools))  # keep order, drop repeats


def _subscribe(frame: dict[str, Any], ref: Any) -> Subscribe:
    tools = _tools(frame, ref)
    history = frame.get("history", 0)
    if type(history) is not int or not 0 <= history <= MAX_HISTORY:
        raise _bad(f"history: expected an integer from 0 to {MAX_HISTORY}", ref)
    since = frame.get("since", {})
    if not isinstance(since, dict):
        raise _bad('since: expected an object {"tool": "<event id>"}', ref)
    bad_since: dict[str, str] = {}
    for tool, event_id in since.items():
        if tool not in tools:
            raise _bad(f"since: {tool!r} is not among this frame's tools", ref)
        if parse_id(event_id) is None:
            bad_since[tool] = f"since.{tool}: expected an event id like 1764040000000-0"
    presence = frame.get("presence", False)
    if not isinstance(presence, bool):
        raise _bad("presence: expected true or false", ref)
    position = frame.get("position", False)
    if not isinstance(position, bool):
        raise _bad("position: expected true or false", ref)
    good = {tool: event_id for tool, event_id in since.items() if tool not in bad_since}
    return Subscribe(tools, history, good, presence, ref, bad_since, position)


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """Parse one client frame; raises :class:`FrameError` for anything not accepted."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _bad("frames are JSON objects", None) from None
    if not isinstance(frame, dict):
        raise _bad("frames are JSON objects", None)
    ref = frame.get("ref")
    if ref is not None and not (
        (isinstance(ref, str) and len(ref) <= MAX_REF_LENGTH)
        or (type(ref) is int and abs(ref) < 2**53)
    ):
        raise _bad(f"ref: expected an integer or a string of <= {MAX_REF_LENGTH} characters", None)
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise _bad('type: expected a string such as "subscribe"', ref)
    allowed = _FIELDS.get(kind)
    if allowed is None:
        raise FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:40]!r}", ref)
    unknown = sorted(set(frame) - allowed)
    if unknown:
        raise _bad(f"unknown field {unknown[0][:40]!r} in a {kind} frame", ref)
    if kind == "subscribe":
        return _subscribe(frame, ref)
    if kind == "unsubscribe":
        return Unsubscribe(_tools(frame, ref), ref)
    if kind == "auth":
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            raise _bad("token: expected a non-empty string", ref)
        return Auth(token, ref)
    return Ping(ref)


# Server frames. Small dicts encoded on demand; events are not built here (they are
# assembled once per process in livefeed.envelope).


def _encode(frame: dict[str, Any], ref: Any) -> bytes:
    if ref is not None:
        frame["ref"] = ref
    return orjson.dumps(frame)


def welcome(connection_id: str, heartbeat: float) -> bytes:
    beat: float | int = int(heartbeat) if float(heartbeat).is_integer() else heartbeat
    return orjson.dumps({"type": "welcome", "connection_id": connection_id, "heartbeat": beat})


def subscribed(tool: str, ref: Any, presence: int, recovered: bool | None) -> bytes:
    frame: dict[str, Any] = {"type": "subscribed", "tool": tool, "presence": presence}
    if recovered is not None:
        frame["recovered"] = recovered
    return _encode(frame, ref)


def position(tool: str, event_id: str) -> bytes:
    """Where a live subscription starts: everything up to ``event_id`` was replayed or
    is older than what the client asked for (an extension, asked for per subscribe)."""
    return orjson.dumps({"type": "position", "tool": tool, "id": event_id})


def unsubscribed(tool: str, ref: Any) -> bytes:
    return _encode({"type": "unsubscribed", "tool": tool}, ref)


def pong(ref: Any) -> bytes:
    return _encode({"type": "pong"}, ref)


def error(code: ErrorCode, message: str, ref: Any = None, tool: str | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if tool is not None:
        frame["tool"] = tool
    return _encode(frame, ref)


def presence(tool: str, count: int, users: list[str]) -> bytes:
    return orjson.dumps({"type": "presence", "tool": tool, "count": count, "users": users})


# WebSocket framing for the server's side. A server-to-client frame is never masked
# (RFC 6455 5.1), so one encoded frame can be written unchanged to every subscriber.


def ws_text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 65536:
        header = bytes((0x81, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + length.to_bytes(8, "big")
    return header + payload


def authenticated(sub: str, exp: float, ref: Any) -> bytes:
    """The reply to a successful ``auth`` frame (an extension: the contract leaves the
    success case silent)."""
    return _encode({"type": "authenticated", "sub": sub, "exp": exp}, ref)


def close_reason(code: int) -> str:
    """A metrics label for a close code: ``slow_consumer``, ``token_expired``, ..."""
    try:
        return CloseCode(code).name.lower()
    except ValueError:
        return str(code)
