"""Shared aliases. Imports nothing of ours, so every layer may import it."""

from __future__ import annotations

import re
from typing import Any, Final

ToolSlug = str
"""A tool name such as ``flask``; see :data:`TOOL_PATTERN`."""

EventId = str
"""``<milliseconds>-<sequence>``, strictly increasing per tool (and per firehose)."""

Envelope = dict[str, Any]
"""The JSON object every subscriber receives for an event."""

FIREHOSE: Final = "*"
"""The pseudo-tool that carries every event of every tool."""

TOOL_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
HANDLE_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# [0-9], not \d: \d also takes other scripts' digits (U+0661), which int() reads.
EVENT_ID_PATTERN: Final = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


def decimal(text: str, most: int) -> int | None:
    """``text`` as a whole number from 0 to ``most``, if it is one: ASCII digits only
    (``str.isdigit`` also takes U+00B2, which int() refuses), and at most 20 of them
    (int() refuses more than 4,300)."""
    if len(text) > 20 or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= most else None


def tool_list(text: str) -> tuple[str, ...]:
    """The names in a comma-separated ``?tools=``, trimmed, blanks skipped, each once."""
    return tuple(dict.fromkeys(name for name in (t.strip() for t in text.split(",")) if name))


def is_tool(name: object) -> bool:
    """True for a publishable tool slug (the firehose is not one)."""
    return isinstance(name, str) and TOOL_PATTERN.fullmatch(name) is not None


def is_channel(name: object) -> bool:
    """True for anything a client may subscribe to: a tool slug or the firehose."""
    return name == FIREHOSE or is_tool(name)
