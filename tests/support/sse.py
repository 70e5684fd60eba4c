"""A small Server-Sent Events reader for tests: the browser's parsing rules, over httpx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.support.timing import TIMEOUT


@dataclass
class Message:
    event: str = "message"
    data: str = ""
    id: str | None = None  # the id field of this message, if it had one
    comment: bool = False

    def json(self) -> Any:
        return orjson.loads(self.data)


@dataclass
class SseStream:
    response: httpx.Response
    lines: AsyncIterator[str]
    last_event_id: str = ""  # as a browser tracks it (id-only messages update it too)
    messages: list[Message] = field(default_factory=list)

    async def next(self, timeout: float = TIMEOUT) -> Message:
        """The next message, comment or id-only message (each dispatched alone)."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Message:
        message = Message()
        seen = False
        async for line in self.lines:
            if line == "":
                if seen:
                    return message
                continue
            seen = True
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                message.comment = True
            elif name == "event":
                message.event = value
            elif name == "data":
                message.data = f"{message.data}\n{value}" if message.data else value
            elif name == "id":
                message.id = value
                self.last_event_id = value
        raise EOFError("the stream ended")

    async def events(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """The next ``count`` story/activity envelopes, skipping other messages."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            message = await self.next(timeout)
            if message.event in {"story", "activity"}:
                found.append(message.json())
        return found

    async def wait_for(self, event: str, timeout: float = TIMEOUT) -> Message:
        while (message := await self.next(timeout)).event != event:
            pass
        return message


async def open_sse(
    client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> SseStream:
    request = client.build_request("GET", url, headers=headers or {})
    response = await client.send(request, stream=True)
    return SseStream(response, response.aiter_lines())
