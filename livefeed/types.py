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
EVENT_ID_PATTERN: Final = re.compile(r"(\d{1,20})-(\d{1,20})")


def is_tool(name: object) -> bool:
    """True for a publishable tool slug (the firehose is not one)."""
    return isinstance(name, str) and TOOL_PATTERN.fullmatch(name) is not None


def is_channel(name: object) -> bool:
    """True for anything a client may subscribe to: a tool slug or the firehose."""
    return name == FIREHOSE or is_tool(name)
