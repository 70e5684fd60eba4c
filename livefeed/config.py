"""One frozen :class:`Settings`, read once from the environment and ``livefeed serve`` flags.

This is the only module that reads ``os.environ``. Every setting is listed once in
:data:`SETTINGS`, which also drives the CLI flags and the table in docs/operations.md.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from livefeed.types import is_tool


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def switch(value: str) -> bool:
    """An on/off setting ("1", "true", "yes", "on" / "0", "false", "no", "off", "")."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"expected a positive number, got {value!r}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"expected a TCP port (0-65535), got {value!r}")
    return number


def _redis_url(value: str) -> str:
    # The parser the server's Redis clients use (a scheme it does not take, a bad port):
    # its ValueError now, not a traceback later. Imported only when a URL is given.
    from redis.asyncio.connection import parse_url

    parse_url(value)
    return value


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in logging.getLevelNamesMapping():  # DEBUG ... CRITICAL, WARN, FATAL
        raise ValueError(f"expected debug, info, warning, error or critical, got {value!r}")
    return level.lower()


def _tools(value: str) -> frozenset[str]:
    tools = _csv(value)
    bad = [tool for tool in tools if not is_tool(tool)]
    if bad:
        raise ValueError(f"not tool slugs: {', '.join(bad)}")
    return frozenset(tools)


SSE_KEEPALIVE_MAX = 15.0  # the contract: a comment line at least every 15 s
HEARTBEAT_MAX = 3600.0  # pings further apart would not find a dead connection


@dataclass(frozen=True)
class Setting:
    """One configuration knob: its field, environment names, parser and help text."""

    field: str
    env: tuple[str, ...]
    parse: Callable[[str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("host", ("LIVEFEED_HOST",), str, "interface to listen on"),
    Setting("port", ("PORT", "LIVEFEED_PORT"), _port, "TCP port to listen on"),
    Setting(
        "redis_url",
        ("LIVEFEED_REDIS_URL", "REDIS_URL"),
        _redis_url,
        "Redis URL; none = the embedded in-memory broker (one process)",
    ),
    Setting("redis_prefix", ("LIVEFEED_REDIS_PREFIX",), str, "prefix of every Redis key/channel"),
    Setting("publish_keys", ("LIVEFEED_PUBLISH_KEYS",), _csv, "comma-separated HTTP publish keys"),
    Setting("secret", ("LIVEFEED_SECRET",), str, "HS256 secret that signs subscriber tokens"),
    Setting("private_tools", ("LIVEFEED_PRIVATE_TOOLS",), _tools, "tools that need a token"),
    Setting(
        "allowed_origins",
        ("LIVEFEED_ALLOWED_ORIGINS",),
        _csv,
        "Origins allowed (comma-separated) for WebSocket, SSE and CORS reads; unset = any",
    ),
    Setting("history_size", ("LIVEFEED_HISTORY_SIZE",), positive_int, "events kept per tool"),
    Setting("heartbeat", ("LIVEFEED_HEARTBEAT",), positive_float, "WebSocket ping interval (s)"),
    Setting("max_frame_bytes", ("LIVEFEED_MAX_FRAME_BYTES",), positive_int, "client frame limit"),
    Setting(
        "max_subscriptions",
        ("LIVEFEED_MAX_SUBSCRIPTIONS",),
        positive_int,
        "subscriptions per connection",
    ),
    Setting("frame_rate", ("LIVEFEED_FRAME_RATE",), positive_float, "client frames/s"),
    Setting("frame_burst", ("LIVEFEED_FRAME_BURST",), positive_int, "client frame burst"),
    Setting(
        "outbox_frames",
        ("LIVEFEED_OUTBOX_FRAMES",),
        positive_int,
        "unsent frames before a slow consumer is closed (4008)",
    ),
    Setting(
        "outbox_bytes",
        ("LIVEFEED_OUTBOX_BYTES",),
        positive_int,
        "unsent bytes before a slow consumer is closed (4008)",
    ),
    Setting(
        "publish_rate",
        ("LIVEFEED_PUBLISH_RATE",),
        positive_float,
        "events/s each publish key may publish",
    ),
    Setting("publish_burst", ("LIVEFEED_PUBLISH_BURST",), positive_int, "publish burst (events)"),
    Setting("max_body_bytes", ("LIVEFEED_MAX_BODY_BYTES",), positive_int, "publish body limit"),
    Setting("max_batch", ("LIVEFEED_MAX_BATCH",), positive_int, "events per publish request"),
    Setting(
        "sse_keepalive",
        ("LIVEFEED_SSE_KEEPALIVE",),
        positive_float,
        "seconds between SSE comment lines (at most 15)",
    ),
    Setting("demo", ("LIVEFEED_DEMO",), switch, "publish the demo stream inside the server"),
    Setting("demo_rate", ("LIVEFEED_DEMO_RATE",), positive_float, "demo events per second"),
    Setting("log_json", ("LIVEFEED_LOG_JSON",), switch, "log one JSON object per line"),
    Setting(
        "log_level",
        ("LIVEFEED_LOG_LEVEL",),
        _log_level,
        "log level (debug, info, warning, error, critical)",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know, fixed at start-up and passed down."""

    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None
    redis_prefix: str = "livefeed:"
    publish_keys: tuple[str, ...] = ()
    secret: str | None = None
    private_tools: frozenset[str] = frozenset()
    allowed_origins: tuple[str, ...] = ()
    history_size: int = 1000
    heartbeat: float = 25.0
    max_frame_bytes: int = 4096
    max_subscriptions: int = 100
    frame_rate: float = 20.0
    frame_burst: int = 40
    outbox_frames: int = 1000
    outbox_bytes: int = 4 * 1024 * 1024
    publish_rate: float = 1000.0
    publish_burst: int = 5000
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 1000
    sse_keepalive: float = 15.0
    demo: bool = False

    demo_rate: float = 2.0
    log_json: bool = False
    log_level: str = "info"
    # Not configurable by environment: fixed by the contract.
    idempotency_ttl: int = 600
    max_history_request: int = 100

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every :data:`SETTINGS` variable; ``overrides`` (CLI flags) win.

        Raises :class:`ConfigError` naming the variable when a value cannot be parsed.
        """
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            value = read_setting(setting, environ)
            if value is not None:
                values[setting.field] = value
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.private_tools and not self.secret:
            raise ConfigError("LIVEFEED_PRIVATE_TOOLS needs LIVEFEED_SECRET to verify tokens")
        if self.secret is not None:
            check_secret(self.secret)

        if self.heartbeat > HEARTBEAT_MAX:
            raise ConfigError(f"LIVEFEED_HEARTBEAT must be at most {HEARTBEAT_MAX:g} s")
        if self.sse_keepalive > SSE_KEEPALIVE_MAX:
            raise ConfigError(
                f"LIVEFEED_SSE_KEEPALIVE must be at most {SSE_KEEPALIVE_MAX:g} s: a stream "
                "needs a comment line at least that often (CONTRACT.md)"
            )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def read_setting(setting: Setting, environ: Mapping[str, str] | None = None) -> Any:
    """One setting's value from the environment, parsed; None when it is not set.
    Raises :class:`ConfigError` naming the variable."""
    environ = os.environ if environ is None else environ
    name = next((n for n in setting.env if environ.get(n, "") != ""), None)
    if name is None:
        return None
    try:
        return setting.parse(environ[name])
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def check_secret(secret: str) -> None:
    if len(secret.encode()) < 32:
        raise ConfigError(
            "LIVEFEED_SECRET must be at least 32 bytes: HS256 keys shorter than the "
            "hash are guessable (RFC 7518 3.2)"
        )


def one_setting(field: str, environ: Mapping[str, str] | None = None) -> Any:
    """One setting from the environment, or its default: for code that is not the
    server (a publisher), which must not fail on the server's other settings."""
    (known,) = (s for s in SETTINGS if s.field == field)
    value = read_setting(known, environ)
    return getattr(Settings, field) if value is None else value
