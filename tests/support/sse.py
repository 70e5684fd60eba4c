"""A small Server-Sent Events reader for tests: the browser's parsing rules, over httpx."""

from __future__ import annotations

import asyncio
import socket
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


@dataclass
class StalledReader:
    """An SSE request on a socket with a tiny receive buffer, read up to its first
    ``subscribed`` event and then no more: what the server writes soon backs up."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    head: bytes  # the response up to and including "event: subscribed"

    @classmethod
    async def open(cls, port: int, tool: str) -> StalledReader:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET /sse?tools={tool} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"event: subscribed"), TIMEOUT)
        return cls(reader, writer, head)

    def abort(self) -> None:
        self.writer.transport.abort()
